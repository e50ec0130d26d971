"""The xgrammar logits processor on the real SmolLM2 tokenizer, driven by random logits.

Random logits are the worst-case "model": whatever it prefers, the masked argmax must spell a parsable call
whose arguments validate against the tool's schema.
"""
from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from agents.chat.grammar import GrammarError, GrammarFactory
from agents.chat.toolcalls import parse_tool_calls
from agents.chat.tooling import normalize_tool_choice
from chat_tool_schemas import TOOL_SCHEMAS


@pytest.fixture(scope="module")
def factory(chat_tokenizer):
    return GrammarFactory(chat_tokenizer, stop_token_ids=[chat_tokenizer.eos_token_id])


def _sample(processor, tokenizer, seed: int, max_tokens: int = 400) -> str:
    gen = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    for _ in range(max_tokens):
        logits = processor(ids, torch.randn(processor.vocab_size, generator=gen) * 3)
        token = int(torch.argmax(logits))
        ids.append(token)
        if token == tokenizer.eos_token_id:
            break
    processor(ids, torch.zeros(processor.vocab_size))  # feed the last token
    return tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("index", range(0, len(TOOL_SCHEMAS), 4))  # all 20 run on the real model
def test_chat_grammar_forced_call_is_schema_valid(factory, chat_tokenizer, index):
    tool, _ = TOOL_SCHEMAS[index]
    name = tool["function"]["name"]
    proc = factory.for_tools([tool], normalize_tool_choice(name, [tool]), parallel=False)
    text = _sample(proc, chat_tokenizer, seed=index)
    assert proc.finished, text
    parsed = parse_tool_calls(text, [name])
    assert parsed.invalid_tool_calls == [] and len(parsed.tool_calls) == 1, text
    jsonschema.validate(parsed.tool_calls[0]["args"], tool["function"]["parameters"])


def test_chat_grammar_required_picks_one_of_several_tools(factory, chat_tokenizer):
    tools = [t for t, _ in TOOL_SCHEMAS[:5]]
    by_name = {t["function"]["name"]: t for t in tools}
    proc = factory.for_tools(tools, normalize_tool_choice("required", tools), parallel=True)
    parsed = parse_tool_calls(_sample(proc, chat_tokenizer, seed=7), list(by_name))
    assert parsed.tool_calls and not parsed.invalid_tool_calls
    for call in parsed.tool_calls:
        jsonschema.validate(call["args"], by_name[call["name"]]["function"]["parameters"])


def test_chat_grammar_auto_leaves_text_free_until_a_call_starts(factory, chat_tokenizer):
    tool = TOOL_SCHEMAS[0][0]
    proc = factory.for_tools([tool], normalize_tool_choice("auto", [tool]))
    ids = chat_tokenizer.encode("Hello there, friend.", add_special_tokens=False)
    for i in range(len(ids)):  # free text: the grammar accepts whatever the model writes
        proc(ids[:i], torch.zeros(proc.vocab_size))
    proc(ids, torch.zeros(proc.vocab_size))
    assert proc.rejected_token is None
    start = chat_tokenizer.encode("<tool_call>", add_special_tokens=False)
    ids += start
    masked = proc(ids, torch.zeros(proc.vocab_size))
    allowed = torch.isfinite(masked).nonzero().flatten().tolist()
    assert allowed and all(chat_tokenizer.decode([t]).strip() in "\n" or
                           "\n{\"name\"".startswith(chat_tokenizer.decode([t])) for t in allowed[:50])


def test_chat_grammar_response_format_json_schema(factory, chat_tokenizer):
    schema = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 20},
                                               "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3}},
              "required": ["title", "tags"], "additionalProperties": False}
    proc = factory.for_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    text = _sample(proc, chat_tokenizer, seed=3)
    jsonschema.validate(json.loads(text, strict=False), schema)  # raw control characters are legal for the grammar
    proc = factory.for_response_format({"type": "json_object"})
    text = _sample(proc, chat_tokenizer, seed=4)
    # random logits may fill an unbounded object until max_tokens; a finished one must be an object
    assert isinstance(json.loads(text, strict=False), dict) if proc.finished else text.startswith("{")
    assert factory.for_response_format({"type": "text"}) is None


def test_chat_grammar_bad_schema_is_an_agent_error(factory):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}
    with pytest.raises(GrammarError):
        factory.for_tools([tool], normalize_tool_choice("required", [tool]))
