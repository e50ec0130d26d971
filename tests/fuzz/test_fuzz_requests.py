"""Fuzzing `cpm serve`'s request reading: any body bytes, and any JSON in any field of a valid chat, text or
embeddings request, end in a checked request or a RequestError (the server's 400), in bounded time."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz_targets import as_json_bytes, fuzz_settings, request_bytes, request_json
from hypothesis import given
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "corpus" / "requests.json"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0.5,
        "top_p": 0.9, "seed": 1, "stop": ["x"], "stream": False, "tools": [TOOL], "tool_choice": "auto",
        "response_format": {"type": "text"}, "parallel_tool_calls": True, "n": 1, "prompt": "p", "input": "i",
        "stream_options": {"include_usage": True}, "max_completion_tokens": 3, "echo": False}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16)


@fuzz_settings(400)
@given(st.dictionaries(st.sampled_from(sorted(CHAT)), json_values, max_size=5))
def test_any_value_in_any_field(changes):
    request_json({**CHAT, **changes})


@fuzz_settings(300)
@given(st.lists(st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "name", "tool_call_id"]),
                                json_values, max_size=4), max_size=3))
def test_any_messages(messages):
    request_json({**CHAT, "messages": messages})


@fuzz_settings(300)
@given(st.binary(max_size=400))
def test_any_body_bytes(raw):
    request_bytes(raw)


@fuzz_settings(100)
@given(st.integers(1, 3000), st.sampled_from("[{"))
def test_deep_nesting(depth, bracket):
    close = "]" if bracket == "[" else "}"
    opener = bracket if bracket == "[" else '{"a":'
    request_bytes(b'{"messages": ' + (opener * depth + ("1" if bracket == "{" else "") + close * depth).encode()
                  + b"}")


@pytest.mark.parametrize("case", json.loads(CORPUS.read_text()), ids=lambda c: c["why"][:40])
def test_regression_corpus(case):
    body = case.get("body", "[" * case.get("nested", 0) + "]" * case.get("nested", 0))
    request_bytes(body.encode() if isinstance(body, str) else as_json_bytes(body))
