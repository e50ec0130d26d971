"""Fuzzing one step past the request models: fuzzed tool parameter and response schemas that pass the models go
through the real runner's `prepare` (chat template, xgrammar grammar) on the default model. The property: only
the errors the server answers as 400 (RequestError, AgentError, EngineError, ValueError), never a 500.
Found `"properties": []` crashing the grammar's schema bounding (AttributeError); the models now check JSON
Schemas first (corpus below)."""
from __future__ import annotations

import pytest
from fuzz_targets import fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st

from agents.errors import AgentError
from engine.errors import EngineError
from tui.server import chat_request
from tui.serve_requests import ChatCompletionBody, RequestError, validate

KEYS = ["type", "properties", "items", "enum", "required", "minLength", "maxLength", "minimum", "maximum", "anyOf",
        "$ref", "format", "pattern", "const", "additionalProperties"]
leaf = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=6)
values = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(KEYS), inner, max_size=4), max_leaves=10)
schemas = st.dictionaries(st.sampled_from(KEYS), values, max_size=4)


@pytest.fixture(scope="module")
def runner():
    from agents.chat.engine_runner import EngineRunner
    from engine import Engine

    return EngineRunner(Engine.load("smollm2-135m", device="cpu"))


def body_for(schema: dict, choice: str, parallel: bool, fmt: str | None) -> dict:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "tool_choice": choice,
            "parallel_tool_calls": parallel, "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"a": schema}}}}]}
    if fmt == "json_schema":
        body.update(tool_choice="none", response_format={"type": "json_schema", "json_schema": {
            "name": "r", "schema": schema}})
    elif fmt:
        body["response_format"] = {"type": fmt}
    return body


@fuzz_settings(60)
@given(schemas, st.sampled_from(["auto", "required", "none"]), st.booleans(),
       st.sampled_from([None, "json_object", "json_schema"]))
@example({"properties": []}, "auto", False, None)
@example({"properties": None}, "required", True, None)
@example({"type": "nope"}, "none", True, "json_schema")
def test_prepared_or_refused(runner, schema, choice, parallel, fmt):
    try:
        checked = validate(ChatCompletionBody, body_for(schema, choice, parallel, fmt))
        checked.check_tool_choice()
        runner.prepare(chat_request(checked))
    except (RequestError, AgentError, EngineError, ValueError):
        pass
