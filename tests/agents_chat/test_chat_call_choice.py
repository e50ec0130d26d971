"""Calls that close inside their token budget, and the first call's tool chosen by the model's own scores.

The grammar checks run on the real SmolLM2 tokenizer with random logits (the worst-case "model"); the choice
checks run the real model on real BFCL cases from the shared data.
"""
from __future__ import annotations

import jsonschema
import pytest
import torch

from agents.chat.grammar import CALL_HEAD, GrammarFactory, _in_string, _steer
from agents.chat.toolcalls import parse_tool_calls
from agents.chat.tooling import normalize_tool_choice
from chat_tool_schemas import TOOL_SCHEMAS


@pytest.fixture(scope="module")
def factory(chat_tokenizer):
    return GrammarFactory(chat_tokenizer, stop_token_ids=[chat_tokenizer.eos_token_id])


def _decode_under(proc, tokenizer, seed: int, budget: int) -> tuple[str, int]:
    """Random logits through `proc` for at most `budget` tokens; the text (head included) and tokens used."""
    gen = torch.Generator().manual_seed(seed)
    head = proc.matcher.find_jump_forward_string()
    proc.matcher.accept_string(head)
    proc.budget, proc.head = budget, head
    ids: list[int] = []
    while len(ids) < budget:
        token = int(torch.argmax(proc(ids, torch.randn(proc.vocab_size, generator=gen) * 3)))
        ids.append(token)
        if token == tokenizer.eos_token_id:
            break
    proc(ids, torch.zeros(proc.vocab_size))
    return head + tokenizer.decode(ids, skip_special_tokens=True), len(ids)


def test_in_string_reads_json_quotes():
    assert _in_string('<tool_call>\n{"name": "f", "arguments": {"city": "Par')
    assert not _in_string('<tool_call>\n{"name": "f", "arguments": {"city": "Paris", ')
    assert _in_string('{"name": "f", "arguments": {"q": "say \\"hi')       # an escaped quote does not close
    assert not _in_string('{"name": "f", "arguments": {"n": 4')


@pytest.mark.parametrize("index", range(len(TOOL_SCHEMAS)))
def test_forced_call_closes_within_bfcls_budget(factory, chat_tokenizer, index):
    """Random logits write long strings and arrays; the call still closes, schema-valid, inside 96 tokens (BFCL runs here use 96)."""
    tool, _ = TOOL_SCHEMAS[index]
    name = tool["function"]["name"]
    proc = factory.for_tools([tool], normalize_tool_choice(name, [tool]), parallel=False)
    text, used = _decode_under(proc, chat_tokenizer, seed=index, budget=96)
    assert used <= 96 and text.rstrip().endswith("</tool_call>"), text   # the end token may fall past the budget
    parsed = parse_tool_calls(text, [name])
    assert len(parsed.tool_calls) == 1 and not parsed.invalid_tool_calls, text
    jsonschema.validate(parsed.tool_calls[0]["args"], tool["function"]["parameters"])


def test_steer_keeps_only_tokens_along_the_chosen_name(factory, chat_tokenizer):
    """The first call of a required reply goes to the steered tool whatever the logits prefer."""
    tools = [t for t, _ in TOOL_SCHEMAS[:5]]
    target = tools[3]["function"]["name"]
    for seed in range(3):
        proc = factory.for_tools(tools, normalize_tool_choice("required", tools), parallel=False)
        proc.steer, proc.piece = f'{CALL_HEAD}{target}"', factory.piece
        text, _ = _decode_under(proc, chat_tokenizer, seed=seed, budget=200)
        parsed = parse_tool_calls(text, [t["function"]["name"] for t in tools])
        assert [c["name"] for c in parsed.tool_calls] == [target], text


def test_steer_changes_nothing_off_its_path():
    row = torch.tensor([0.0, 1.0, float("-inf"), 2.0])
    pieces = {0: "ab", 1: "x", 3: "a"}.get
    _steer(row, "", "abc", lambda i: pieces(i, ""))
    assert torch.isfinite(row).tolist() == [True, False, False, True]
    row = torch.tensor([0.0, 1.0])
    _steer(row, "zz", "abc", lambda i: "q")               # text no longer on the path: unchanged
    assert row.tolist() == [0.0, 1.0]


@pytest.fixture(scope="module")
def runner(shared_data):
    from agents.chat import ChatEngine

    return ChatEngine.from_model("smollm2-135m", device="cpu").runner


def _bfcl_case(shared_data, case_id: str):
    from agents.bfcl.data import category_of, load_cases
    from agents.bfcl.tools import to_openai_tools

    case = next(c for c in load_cases(shared_data / "bfcl", [category_of(case_id)], None) if c.id == case_id)
    return case.question[0], to_openai_tools(case.functions)


def test_required_call_names_the_tool_the_model_scores_best(runner, shared_data):
    """BFCL multiple_7: greedy decoding named ecological_impact_analyze (the first token decided); the scored
    choice names wildlife_population_assess_growth, the right one, and the call is complete."""
    from agents.chat.engine_runner import ChatRequest

    messages, tools = _bfcl_case(shared_data, "multiple_7")
    reply = runner.complete(ChatRequest(messages=messages, tools=tools, tool_choice="required", max_tokens=96))
    assert [c["name"] for c in reply.parsed.tool_calls] == ["wildlife_population_assess_growth"]
    assert reply.finish_reason == "tool_calls"


def test_three_free_text_arguments_close_inside_40_tokens(runner, shared_data):
    """BFCL multiple_10's database_create_backup: its strings ran to the 128-character bound and past a 96-token
    budget; near the end of the budget the call is closed instead of cut."""
    from agents.chat.engine_runner import ChatRequest

    messages, tools = _bfcl_case(shared_data, "multiple_10")
    reply = runner.complete(ChatRequest(messages=messages, tools=tools, tool_choice="database_create_backup",
                                        max_tokens=40))
    assert not reply.parsed.invalid_tool_calls and len(reply.parsed.tool_calls) == 1
    schema = next(t for t in tools if t["function"]["name"] == "database_create_backup")["function"]["parameters"]
    jsonschema.validate(reply.parsed.tool_calls[0]["args"], schema)
    assert reply.completion_tokens <= 40 and reply.finish_reason == "tool_calls"
