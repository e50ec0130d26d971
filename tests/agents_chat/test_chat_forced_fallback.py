"""The forced-call fallback of the OpenAI backend (agents/chat/forced_calls.py), against a real `cpm serve`: the
turn asked under `response_format` (a JSON schema of the allowed calls) comes back as a schema-valid call, and a
reply that is not a call becomes an invalid call with the reason, not an exception."""
from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from agents.chat import ChatOpenAICompatible
from agents.chat.forced_calls import call_from_json, is_forced, json_call_body
from chat_checks import assert_schema_valid_call
from chat_tool_schemas import TOOL_SCHEMAS

MODEL = "smollm2-135m"


def test_forced_call_asked_under_a_schema_comes_back_valid(serve_url):
    tool, question = TOOL_SCHEMAS[12]
    chat = ChatOpenAICompatible(base_url=serve_url, model=MODEL, max_tokens=96, timeout=300)
    body = chat._payload([HumanMessage(question)], None, {"tools": [tool], "tool_choice": tool["function"]["name"]},
                         stream=False)
    assert is_forced(body) and body["tools"][0]["function"]["strict"] is True  # named -> required over that tool
    again = json_call_body(body)
    assert "tools" not in again and again["response_format"]["type"] == "json_schema"
    reply = chat._message(chat._transport.request_json("POST", "/chat/completions", again), again)
    message = call_from_json(reply, [tool["function"]["name"]])
    assert_schema_valid_call(message, tool)
    assert message.response_metadata["forced_call_via"] == "response_format"


def test_a_reply_that_is_not_a_call_is_an_invalid_call():
    message = call_from_json(AIMessage(content="The weather is nice."), ["get_weather"])
    assert not message.tool_calls and "JSONDecodeError" in message.invalid_tool_calls[0]["error"]
    wrong = call_from_json(AIMessage(content='{"name": "other", "arguments": {}}'), ["get_weather"])
    assert "not a call of get_weather" in wrong.invalid_tool_calls[0]["error"]
