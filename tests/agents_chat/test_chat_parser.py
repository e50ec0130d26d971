"""The tool-call parser: every supported format, clear errors, and fuzzing (never raises; valid calls round-trip)."""
from __future__ import annotations

import keyword
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.chat.toolcalls import format_errors_for_model, parse_tool_calls, render_tool_call

TOOLS = ["get_weather", "search", "server.read-file"]


def _calls(parsed):
    return [(c["name"], c["args"]) for c in parsed.tool_calls]


def test_chat_parser_hermes_with_prose():
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    parsed = parse_tool_calls(text, TOOLS)
    assert _calls(parsed) == [("get_weather", {"city": "Paris"})]
    assert parsed.content == "Let me check."
    assert parsed.tool_calls[0]["id"].startswith("call_")


def test_chat_parser_minicpm_mcp_format():
    text = ("<|thought_start|>\nI need the file\n<|thought_end|>\n<|tool_call_start|>\n```python\n"
            'server.read-file(path="/etc/hosts", from=2)\nsearch(query="x")\n```\n<|tool_call_end|>\nDone.')
    parsed = parse_tool_calls(text, TOOLS)
    assert _calls(parsed) == [("server.read-file", {"path": "/etc/hosts", "from": 2}), ("search", {"query": "x"})]
    assert parsed.content == "Done."


def test_chat_parser_bare_json_and_python_styles():
    assert _calls(parse_tool_calls('```json\n{"name": "search", "parameters": {"q": 1}}\n```', TOOLS)) == [
        ("search", {"q": 1})]
    assert _calls(parse_tool_calls('[{"name": "search", "arguments": "{\\"q\\": 2}"}]', TOOLS)) == [
        ("search", {"q": 2})]
    assert _calls(parse_tool_calls('[get_weather(city="Rome", days=3), search(query=null)]', TOOLS)) == [
        ("get_weather", {"city": "Rome", "days": 3}), ("search", {"query": None})]


def test_chat_parser_prose_and_plain_json_stay_content():
    for text in ["Hello there!", '{"answer": 42}', "call print(x) later", "unknown_fn(a=1)"]:
        parsed = parse_tool_calls(text, TOOLS)
        assert parsed.tool_calls == [] and parsed.invalid_tool_calls == [] and parsed.content == text


def test_chat_parser_errors_are_structured_and_actionable():
    bad_json = parse_tool_calls('<tool_call>{"name": "search", "arguments": {"q": 1,}}</tool_call>', TOOLS)
    assert bad_json.tool_calls == []
    (err,) = bad_json.invalid_tool_calls
    assert err["name"] == "search" and "not valid JSON" in err["error"] and "column" in err["error"]
    unknown = parse_tool_calls('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', TOOLS)
    assert "no tool named 'nope'" in unknown.invalid_tool_calls[0]["error"]
    assert "get_weather" in unknown.invalid_tool_calls[0]["error"]
    positional = parse_tool_calls("<|tool_call_start|>```python\nsearch('x')\n```<|tool_call_end|>", TOOLS)
    assert "positional" in positional.invalid_tool_calls[0]["error"]
    cut = parse_tool_calls('<tool_call>{"name": "search", "argum', TOOLS)
    assert cut.invalid_tool_calls and "not valid JSON" in cut.invalid_tool_calls[0]["error"]
    assert "search" in format_errors_for_model(cut.invalid_tool_calls)


# ---- fuzzing -----------------------------------------------------------------------------------------------
_ident = st.text(string.ascii_lowercase + "_", min_size=1, max_size=8).filter(
    lambda s: not keyword.iskeyword(s) and not s.startswith("__"))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=20))
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_ident, inner, max_size=3)), max_leaves=8)
_args = st.dictionaries(_ident, _value, max_size=4)
_name = st.one_of(_ident, st.builds(lambda a, b: f"{a}.{b}-x", _ident, _ident))
_pieces = st.sampled_from(["<tool_call>", "</tool_call>", "<|tool_call_start|>", "<|tool_call_end|>", "```python",
                           "```", '{"name": ', '"arguments": ', "{", "}", "[", "]", "(", ")", "=", ",", '"', "\n",
                           "f", "a=1", "<|thought_start|>", "<|thought_end|>", "null", "\\", "\x00"])


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_pieces, max_size=30).map("".join)))
def test_chat_parser_fuzz_never_raises(text):
    parsed = parse_tool_calls(text, TOOLS)
    for call in parsed.invalid_tool_calls:
        assert call["error"]
    parse_tool_calls(text)


@settings(max_examples=120, deadline=None)
@given(_name, _args, st.sampled_from(["hermes", "minicpm", "json", "python"]), st.integers(0, 400))
def test_chat_parser_roundtrip_and_truncation(name, args, style, cut):
    text = render_tool_call(name, args, style)
    parsed = parse_tool_calls(text, [name])
    assert _calls(parsed) == [(name, args)], text
    truncated = text[: cut % max(len(text), 1)]
    parse_tool_calls(truncated, [name])  # a model cut off by max_tokens: never raises


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_name, _args), min_size=1, max_size=3), st.text(string.ascii_letters + " .", max_size=30))
def test_chat_parser_several_hermes_calls_with_prose(calls, prose):
    text = prose + "\n" + "\n".join(render_tool_call(n, a) for n, a in calls)
    parsed = parse_tool_calls(text, [n for n, _ in calls])
    assert _calls(parsed) == calls
    assert parsed.content == prose.strip()


def test_a_copied_tool_response_wrapper_is_not_answer_text():
    """SmolLM2 answered `cpm chat` with the <tool_response> block it had been shown: the tags go, the text stays."""
    out = parse_tool_calls('<tool_response>\n{"timezone": "UTC", "datetime": "2026-11-23T11:00:00"}\n</tool_response>')
    assert out.content == '{"timezone": "UTC", "datetime": "2026-11-23T11:00:00"}' and not out.tool_calls
    assert parse_tool_calls("It is 11:00 UTC.").content == "It is 11:00 UTC."
