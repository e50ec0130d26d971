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


def test_chat_grammar_bounds_strings_arrays_and_timezones():
    from agents.chat.schema_bounds import MAX_ARRAY_ITEMS, MAX_STRING_CHARS, bounded_schema, iana_zones

    schema = {"type": "object", "properties": {
        "timezone": {"type": "string", "description": "IANA timezone name"},
        "city": {"type": "string"}, "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "when": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "inner": {"type": "object", "properties": {"target_tz": {"type": "string"}}}}}
    before = json.dumps(schema)
    out = bounded_schema(schema)
    assert json.dumps(schema) == before                      # the tool's schema (shown to the model) is unchanged
    props = out["properties"]
    assert props["timezone"]["enum"] == list(iana_zones()) and "Asia/Tokyo" in props["timezone"]["enum"]
    assert props["inner"]["properties"]["target_tz"]["enum"] == list(iana_zones())
    assert props["city"]["maxLength"] == MAX_STRING_CHARS and props["tags"]["items"]["maxLength"] == MAX_STRING_CHARS
    assert props["tags"]["maxItems"] == MAX_ARRAY_ITEMS
    assert "maxLength" not in props["code"] and "maxLength" not in props["when"]   # already bounded


def _first_token_is(processor, token: int, seed: int, tokenizer, max_tokens: int = 300) -> str:
    """Random logits, except that `token` is the model's favourite first token."""
    gen = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    for _ in range(max_tokens):
        logits = torch.randn(processor.vocab_size, generator=gen) * 3
        if not ids:
            logits[token] = 50.0
        token_out = int(torch.argmax(processor(ids, logits)))
        ids.append(token_out)
        if token_out == tokenizer.eos_token_id:
            break
    processor(ids, torch.zeros(processor.vocab_size))
    return tokenizer.decode(ids, skip_special_tokens=True)


def test_chat_grammar_auto_decides_at_the_first_token(factory, chat_tokenizer):
    """A started call is a whole schema-valid call; an answer never begins with half a call marker."""
    tool, _ = TOOL_SCHEMAS[0]
    name = tool["function"]["name"]
    lt = chat_tokenizer.encode("<", add_special_tokens=False)[0]
    proc = factory.for_tools([tool], normalize_tool_choice("auto", [tool]), parallel=False)
    text = _first_token_is(proc, lt, seed=1, tokenizer=chat_tokenizer)
    assert proc.mode == "call" and proc.finished, text
    parsed = parse_tool_calls(text, [name])
    assert len(parsed.tool_calls) == 1 and not parsed.invalid_tool_calls and parsed.content == "", text
    jsonschema.validate(parsed.tool_calls[0]["args"], tool["function"]["parameters"])

    hello = chat_tokenizer.encode("Hello", add_special_tokens=False)[0]
    proc = factory.for_tools([tool], normalize_tool_choice("auto", [tool]))
    text = _first_token_is(proc, hello, seed=2, tokenizer=chat_tokenizer, max_tokens=20)
    assert proc.mode == "answer" and text.startswith("Hello")


def test_chat_grammar_auto_call_bias_and_margin(factory, chat_tokenizer):
    tool, _ = TOOL_SCHEMAS[0]
    proc = factory.for_tools([tool], normalize_tool_choice("auto", [tool]))
    CALL_BIAS = proc.bias  # the plain prior: the runner raises or lowers it by the question's name PMI
    lt = chat_tokenizer.encode("<", add_special_tokens=False)[0]
    hello = chat_tokenizer.encode("Hello", add_special_tokens=False)[0]
    logits = torch.full((proc.vocab_size,), -10.0)
    logits[hello], logits[lt] = 5.0, 5.0 - CALL_BIAS + 0.5      # the model prefers prose by less than the bias
    out = proc([], logits.clone())
    assert proc.margin == pytest.approx(-CALL_BIAS + 0.5) and int(torch.argmax(out)) == lt


def test_chat_grammar_parallel_calls_prefer_ending(factory, chat_tokenizer):
    """After a complete call with parallel calls allowed, ending gets EXTRA_CALL_END_BIAS over another call."""
    from agents.chat.grammar import EXTRA_CALL_END_BIAS

    tool, _ = TOOL_SCHEMAS[0]
    name = tool["function"]["name"]
    proc = factory.for_tools([tool], normalize_tool_choice("required", [tool]), parallel=True)
    first = _sample(factory.for_tools([tool], normalize_tool_choice(name, [tool]), parallel=False), chat_tokenizer, 5)
    ids = chat_tokenizer.encode(first, add_special_tokens=False)
    for i in range(len(ids)):
        proc(ids[:i], torch.zeros(proc.vocab_size))
    out = proc(ids, torch.zeros(proc.vocab_size))
    eos = chat_tokenizer.eos_token_id
    assert out[eos] == EXTRA_CALL_END_BIAS and torch.isfinite(out).sum() > 1


def test_chat_grammar_auto_call_started_by_reasoning(factory, chat_tokenizer):
    """Think-then-call: the runner accepts `<tool_call>` on the undecided processor's matcher when the reasoning
    stopped at one; that decides for the call, and the call grammar forces the rest of the head."""
    tool, _ = TOOL_SCHEMAS[0]
    name = tool["function"]["name"]
    proc = factory.for_tools([tool], normalize_tool_choice("auto", [tool]))
    matcher = proc.matcher
    assert matcher.find_jump_forward_string() == ""         # nothing forced before the decision
    assert matcher.accept_string("<tool_call>") and proc.mode == "call"
    head = matcher.find_jump_forward_string()
    assert head.startswith('\n{"name": "' + name)
    assert matcher.accept_string(head)


def test_chat_grammar_a_repeated_call_ends_the_reply(factory, chat_tokenizer):
    from agents.chat.grammar import repeats_a_call

    one = 'f", "arguments": {"a": 1}}\n</tool_call>'
    again = '\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    other = '\n<tool_call>\n{"name": "f", "arguments": {"a": 2}}\n</tool_call>'
    assert repeats_a_call(one + again) and not repeats_a_call(one + other) and not repeats_a_call(one)
    tool, _ = TOOL_SCHEMAS[0]
    name = tool["function"]["name"]
    proc = factory.for_tools([tool], normalize_tool_choice("required", [tool]), parallel=True)
    head = proc.matcher.find_jump_forward_string()
    proc.matcher.accept_string(head)
    call = _sample(factory.for_tools([tool], normalize_tool_choice(name, [tool]), parallel=False), chat_tokenizer, 5)
    body = call[len(head):]
    ids = chat_tokenizer.encode(body + "\n" + call, add_special_tokens=False)
    for i in range(len(ids)):
        proc(ids[:i], torch.zeros(proc.vocab_size))
    out = proc(ids, torch.zeros(proc.vocab_size))
    assert torch.isfinite(out).nonzero().flatten().tolist() == [chat_tokenizer.eos_token_id]
