"""Think, then call: reasoning stays free text, the grammar applies from the call on, and reasoning is kept apart
from the call and the answer (parser, stream splitter, and the real default model with a forced reasoning
prefix)."""
from __future__ import annotations

import json

import jsonschema
import pytest
from langchain_core.messages import HumanMessage

from agents.chat.reasoning import ReasoningStreamSplitter, split_reasoning
from agents.chat.toolcalls import parse_tool_calls

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                   "required": ["city"], "additionalProperties": False}}}


def test_chat_think_parser_keeps_reasoning_out_of_content_and_calls():
    text = ('<think>The user wants Paris. <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}'
            '</tool_call> no, Paris.</think>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
            "\n</tool_call>")
    out = parse_tool_calls(text, ["get_weather"])
    assert [c["args"] for c in out.tool_calls] == [{"city": "Paris"}]  # the call inside the reasoning is not a call
    assert out.reasoning.startswith("The user wants Paris.") and out.content == ""
    mcp = parse_tool_calls('<|thought_start|>\nneed the time\n<|thought_end|>\n<|tool_call_start|>\n```python\n'
                           'get_weather(city="Oslo")\n```\n<|tool_call_end|>\nDone.', ["get_weather"])
    assert mcp.reasoning == "need the time" and mcp.content == "Done." and mcp.tool_calls[0]["args"] == {"city": "Oslo"}


def test_chat_think_split_reasoning_cut_off_and_open_in_prompt():
    assert split_reasoning("<think>still thinking") == ("still thinking", "")
    assert split_reasoning("plan first</think>Answer.") == ("plan first", "Answer.")
    assert split_reasoning("No reasoning here.") == ("", "No reasoning here.")


def test_chat_think_stream_splitter_holds_partial_markers():
    splitter = ReasoningStreamSplitter()
    pieces = [splitter.feed(p) for p in ["Hi <th", "ink>abc</th", "ink>answer <", "b>"]] + [splitter.flush()]
    reasoning = "".join(r for r, _ in pieces)
    content = "".join(c for _, c in pieces)
    assert reasoning == "abc" and content == "Hi answer <b>"
    assert pieces[0] == ("", "Hi ")  # "<th" is held until it turns out to be a marker


@pytest.fixture(scope="module")
def thinker(smollm2_path):
    from agents.chat import ChatEngine

    return ChatEngine.from_model("smollm2-135m", max_tokens=32, reasoning="think", max_reasoning_tokens=24)


def _check_call(message, reasoning: str) -> None:
    assert len(message.tool_calls) == 1, message
    args = message.tool_calls[0]["args"]
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    dumped = json.dumps(args)
    assert "<think>" not in dumped and "</think>" not in dumped
    assert reasoning.strip() and reasoning.strip() not in dumped
    assert "<think>" not in message.content and reasoning.strip() not in message.content


def test_chat_think_forced_reasoning_then_schema_valid_call(thinker):
    """The real default model reasons after a forced `<think>`, then its call is constrained and schema-valid."""
    bound = thinker.bind_tools([WEATHER], tool_choice="required", parallel_tool_calls=False)
    reply = bound.invoke([HumanMessage("What is the weather in Paris?")])
    reasoning = reply.additional_kwargs.get("reasoning_content", "")
    _check_call(reply, reasoning)
    telemetry = reply.response_metadata["telemetry"]
    assert telemetry["generations"] == 2  # the reasoning, then the call
    assert telemetry["generated_tokens"] == reply.usage_metadata["output_tokens"]

    # Streamed, the reasoning arrives apart from the content and the call is the same kind of call.
    chunks = list(bound.stream([HumanMessage("What is the weather in Paris?")]))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.additional_kwargs.get("reasoning_content", "").strip() == reasoning.strip()  # greedy: same text
    _check_call(merged, reasoning)


def test_chat_think_remote_servers_reasoning_lands_in_the_same_place():
    """A server's reasoning field, or `<think>` left in its text, arrives as ChatEngine's reasoning does."""
    from agents.chat import ChatOpenAICompatible
    from agents.chat.messages import from_openai_message

    left_in = from_openai_message({"content": "<think>why</think>\nAnswer."})
    assert left_in.content == "Answer." and left_in.additional_kwargs["reasoning_content"] == "why"
    parsed = from_openai_message({"content": "Answer.", "reasoning_content": "server side"})
    assert parsed.content == "Answer." and parsed.additional_kwargs["reasoning_content"] == "server side"
    assert from_openai_message({"content": "Plain."}).additional_kwargs == {}
    chat = ChatOpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m")
    chunk = chat._chunk({"choices": [{"delta": {"reasoning_content": "step 1"}, "finish_reason": None}]})
    assert chunk.message.content == "" and chunk.message.additional_kwargs == {"reasoning_content": "step 1"}
