"""ChatEngine on the real smollm2-135m: a plain turn, streaming, and schema-valid constrained tool calls.

The machine running `make test` is small and shared, so the default run covers 3 of the 20 schemas with short
replies; `--run-slow` covers all 20 (and response_format / structured output).
"""
from __future__ import annotations

import json

import jsonschema
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field

from chat_checks import assert_schema_valid_call
from chat_tool_schemas import TOOL_SCHEMAS

DEFAULT_SCHEMAS = (0, 4, 7)  # flat + enum, number + enums, nested array of objects


def test_chat_engine_plain_turn(chat_model):
    reply = chat_model.invoke([SystemMessage("Answer briefly."), HumanMessage("Say hello.")])
    assert isinstance(reply.content, str) and reply.content.strip()
    assert reply.usage_metadata["input_tokens"] > 5
    assert 0 < reply.usage_metadata["output_tokens"] <= 8
    assert reply.response_metadata["finish_reason"] in ("stop", "length")


def test_chat_engine_stream_gives_token_chunks(chat_model):
    chunks = list(chat_model.stream("Name a color."))
    texts = [c.content for c in chunks if c.content]
    assert len(texts) >= 2
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content == "".join(texts)
    assert total.usage_metadata["output_tokens"] == 8  # greedy, max_tokens=8, no EOS in 8 tokens


async def test_chat_engine_astream(chat_model):
    texts = [c.content async for c in chat_model.astream("Name a fruit.", max_tokens=4)]
    assert "".join(texts).strip()


def _tool_params():
    slow = pytest.mark.slow
    return [pytest.param(i, marks=() if i in DEFAULT_SCHEMAS else slow, id=TOOL_SCHEMAS[i][0]["function"]["name"])
            for i in range(len(TOOL_SCHEMAS))]


@pytest.mark.parametrize("index", _tool_params())
def test_chat_engine_constrained_tool_call_is_schema_valid(chat_model, index):
    tool, question = TOOL_SCHEMAS[index]
    bound = chat_model.bind_tools([tool], tool_choice=tool["function"]["name"], parallel_tool_calls=False,
                                  max_tokens=96)
    reply = bound.invoke(question)
    assert_schema_valid_call(reply, tool)
    assert reply.response_metadata["finish_reason"] == "tool_calls"


def test_chat_engine_streamed_tool_call_and_tool_result_turn(chat_model):
    tool, question = TOOL_SCHEMAS[0]
    bound = chat_model.bind_tools([tool], tool_choice="any", parallel_tool_calls=False, max_tokens=64)
    total = None
    for chunk in bound.stream(question):
        assert "<tool_call>" not in chunk.content  # markup is parsed, never streamed as text
        total = chunk if total is None else total + chunk
    args = assert_schema_valid_call(total, tool)
    # the call and its result go back into the next turn (rendered as <tool_call>/<tool_response> text)
    history = [HumanMessage(question), AIMessage("", tool_calls=total.tool_calls),
               ToolMessage(json.dumps({"city": args["city"], "temp_c": 18}), tool_call_id=total.tool_calls[0]["id"])]
    follow = chat_model.bind_tools([tool]).invoke(history, max_tokens=6)
    assert isinstance(follow, AIMessage)


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)


@pytest.mark.slow
def test_chat_engine_structured_output_and_response_format(chat_model):
    person = chat_model.with_structured_output(Person).invoke("Ann is 31 years old.", max_tokens=40)
    assert isinstance(person, Person)
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    reply = chat_model.invoke("Which city is the capital of France? Answer in JSON.", max_tokens=24,
                              response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    jsonschema.validate(json.loads(reply.content), schema)


def test_structured_output_is_one_call_not_repeats(chat_model):
    """with_structured_output binds one call: the grammar closes after it (it used to let the model repeat the
    same call until max_tokens, 512 tokens a FactScore sentence)."""
    roomy = chat_model.model_copy(update={"max_tokens": 120})  # room for a second call, were it allowed
    out = roomy.with_structured_output(Person, include_raw=True).invoke("Ann is 31 years old.")
    raw = out["raw"]
    assert len(raw.tool_calls) == 1 and raw.response_metadata["finish_reason"] == "tool_calls"
    assert isinstance(out["parsed"], Person)
