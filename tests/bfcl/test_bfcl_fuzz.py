"""Hostile model output: the BFCL decoder and scorer, and the chat tool-call parser, never raise anything but
their own error type and never take long (hypothesis properties), plus a corpus of inputs that once failed
(issue 25: a hang, tracebacks, a whole file refused for one bad line)."""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.bfcl.decode import DecodeError, decode_result
from agents.bfcl.score import score_file
from agents.chat.toolcalls import parse_tool_calls

# Each input must be handled within this (wall clock, on a loaded 2-core box); the hang it replaces took > 180 s.
BOUND_S = 5.0

REGRESSIONS = [
    "[f(a=((9**999)**999)**999)]",          # hung the scorer for over 180 s
    "[f(a=" + "-" * 5000 + "1)]",           # RecursionError
    "[f(a=" + "+".join(["1"] * 3000) + ")]",  # RecursionError
    "[f(a={[1]: 2})]",                      # TypeError: unhashable list as a dict key
    "[f(a=2**4097)]", "[f(a=10**1000 * 10**1000 * 10**1000)]", "[f(a=(2**4000)**2)]",
    "[f(a=" + "[" * 3000 + "]" * 3000 + ")]",
    "[f(a=" + "f(b=" * 500 + "1" + ")" * 500 + ")]",
    "[f(a=1.5**1000)]", "[f(a=1/0)]", "[f(a='\udcff')]", "\x00", "[f(**x)]", "[f(a={**x})]",
]


def _bounded(fn, *args):
    start = time.monotonic()
    try:
        return fn(*args)
    finally:
        assert time.monotonic() - start < BOUND_S, args[0] if args else fn


@pytest.mark.parametrize("text", REGRESSIONS, ids=range(len(REGRESSIONS)))
def test_bfcl_decoder_regressions(text):
    try:
        _bounded(decode_result, text)
    except DecodeError:
        pass


def test_bfcl_decoder_exponent_tower_is_decoder_failed():
    with pytest.raises(DecodeError, match="too large to evaluate"):
        decode_result("[f(a=((9**999)**999)**999)]")
    assert decode_result("[f(a=2**10, b=-3, c=3*4)]") == [{"f": {"a": 1024, "b": -3, "c": 12}}]


def test_bfcl_decoder_deep_function_calling_result():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DecodeError):
        _bounded(decode_result, [{"f": deep}])
    nested: list = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(DecodeError, match="nest deeper"):
        decode_result([{"f": {"a": nested}}])


# Python-call-ish text: the decoder's grammar pieces, recombined.
_PIECES = st.sampled_from(["f(", "g.h(", "a=", "b=", "1", "-", "+", "**", "*", "9", "999", "(", ")", "[", "]",
                           "{", "}", ":", ",", "'x'", '"y"', "True", "None", "lambda: 0", "x[0]", " ", "...",
                           "1e308", "0.5", "/", "//", "%", "**-1", "0"])
CALLISH = st.lists(_PIECES, max_size=60).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(CALLISH, st.text(max_size=200)))
def test_bfcl_decoder_fuzz_prompting(text):
    try:
        _bounded(decode_result, text)
    except DecodeError:
        pass


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                   max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.dictionaries(st.text(max_size=10), st.one_of(JSONISH, st.text(max_size=40)),
                                          max_size=3), JSONISH), max_size=4))
def test_bfcl_decoder_fuzz_function_calling(items):
    try:
        _bounded(decode_result, items)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(st.sampled_from(
    ["<tool_call>", "</tool_call>", "{", "}", '"name"', ":", '"f"', ",", '"arguments"', "[", "]", "f(", ")",
     "a=", "1", "<|tool_call_start|>", "<|tool_call_end|>", "```", "\n", "<think>", "</think>", "'", '"']),
    max_size=60).map("".join)))
def test_chat_parser_fuzz_never_raises(text):
    parsed = _bounded(parse_tool_calls, text, ["f"])
    assert isinstance(parsed.content, str)


def test_chat_parser_deep_and_huge_inputs():
    for text in ("<tool_call>" + "[" * 100_000 + "</tool_call>", '{"name": "f", "arguments": ' + "[" * 50_000,
                 "f(a=" + "-" * 5000 + "1)", "<tool_call>f(a=((9**999)**999)**999)</tool_call>"):
        parsed = _bounded(parse_tool_calls, text, ["f"])
        assert not parsed.tool_calls or parsed.tool_calls[0]["name"] == "f"


def test_bfcl_score_keeps_good_lines_and_reports_bad_ones(tmp_path, bfcl_dir, capsys):
    """One malformed JSON line, a non-UTF-8 line end and a 100,000-deep line: the other lines are scored."""
    from tui.cli import main

    path = tmp_path / "r.jsonl"
    good = [json.dumps({"id": "simple_python_0", "result": "[calculate_triangle_area(base=10, height=5)]"}),
            json.dumps({"id": "irrelevance_0", "result": []})]
    deep = '{"id": "simple_python_1", "result": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_bytes((good[0] + "\n{not json\n" + deep + "\n").encode() + b'{"id": "x"}\xff\xfe\n'
                     + (good[1] + "\n").encode())
    report = score_file(path, bfcl_dir)
    assert [c["id"] for c in report["cases"]] == ["simple_python_0", "irrelevance_0"]
    assert [e["line"] for e in report["errors"]] == [2, 3, 4]
    assert "not valid JSON" in report["errors"][0]["error"] and "not UTF-8" in report["errors"][2]["error"]
    assert main(["eval", "bfcl", "--score", str(path), "--data", str(bfcl_dir), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "line 2 not scored: not valid JSON" in out and "line 4 not scored: not UTF-8" in out

