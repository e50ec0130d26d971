"""`cpm serve` started by the test (a real subprocess on a free port), spoken to over real HTTP/SSE by
ChatOpenAICompatible and by the official `openai` client; bad requests get OpenAI-style errors."""
from __future__ import annotations

import httpx
import pytest

from agents.chat import BackendError, ChatOpenAICompatible, make_chat_model
from chat_checks import assert_schema_valid_call, free_port
from chat_tool_schemas import TOOL_SCHEMAS

MODEL = "smollm2-135m"
DEFAULT_SCHEMAS = (12,)  # get_stock_price: a pattern-constrained string (short: the CI machine is small)


@pytest.fixture(scope="module")
def remote(serve_url):
    return ChatOpenAICompatible(base_url=serve_url, model=MODEL, max_tokens=6, timeout=300)


def test_chat_http_models_and_factory(serve_url, monkeypatch):
    assert [m["id"] for m in httpx.get(serve_url + "/models").json()["data"]] == [MODEL]
    monkeypatch.setenv("CPM_BASE_URL", serve_url.removesuffix("/v1"))  # the factory adds /v1
    monkeypatch.setenv("CPM_BACKEND", "openai")
    chat = make_chat_model()
    assert isinstance(chat, ChatOpenAICompatible) and chat.model_name == MODEL


def test_chat_http_plain_and_streaming_turn(remote):
    reply = remote.invoke("Say hello.")
    assert reply.content.strip() and reply.usage_metadata["output_tokens"] == 6
    chunks = list(remote.stream("Say hello."))
    assert len([c for c in chunks if c.content]) >= 2
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content == reply.content  # greedy: the same six tokens either way
    assert total.usage_metadata["output_tokens"] == 6


@pytest.mark.parametrize("index", [pytest.param(i, marks=() if i in DEFAULT_SCHEMAS else pytest.mark.slow,
                                                id=TOOL_SCHEMAS[i][0]["function"]["name"])
                                   for i in range(len(TOOL_SCHEMAS))])
def test_chat_http_constrained_tool_call_is_schema_valid(remote, index):
    tool, question = TOOL_SCHEMAS[index]
    bound = remote.bind_tools([tool], tool_choice=tool["function"]["name"], parallel_tool_calls=False,
                              max_tokens=96)
    assert_schema_valid_call(bound.invoke(question), tool)


def test_chat_http_streamed_tool_call(remote):
    tool, question = TOOL_SCHEMAS[0]
    total = None
    async_free = remote.bind_tools([tool], tool_choice="required", parallel_tool_calls=False, max_tokens=64)
    for chunk in async_free.stream(question):
        total = chunk if total is None else total + chunk
    assert_schema_valid_call(total, tool)
    assert total.response_metadata["finish_reason"] == "tool_calls"


def test_chat_http_official_openai_client(serve_url):
    from openai import BadRequestError, NotFoundError, OpenAI

    client = OpenAI(base_url=serve_url, api_key="unused", max_retries=0, timeout=300)
    assert [m.id for m in client.models.list()] == [MODEL]
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi!"}], max_tokens=4)
    assert out.choices[0].message.content and out.usage.completion_tokens == 4
    tool, question = TOOL_SCHEMAS[0]
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                            tools=[tool], tool_choice="required", parallel_tool_calls=False,
                                            max_tokens=64, stream=True)
    calls = [tc for ev in stream for ch in ev.choices for tc in (ch.delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"] and '"city"' in calls[0].function.arguments
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL, messages=[])


def test_chat_http_bad_requests_get_openai_errors(serve_url, remote):
    bad = httpx.post(serve_url + "/chat/completions", content=b"{not json", timeout=30)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    tool = TOOL_SCHEMAS[0][0]
    wrong_choice = httpx.post(serve_url + "/chat/completions", timeout=30, json={
        "model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [tool], "tool_choice": "nope"})
    assert wrong_choice.status_code == 400
    assert wrong_choice.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(BackendError, match=r"HTTP 400.*response_format"):
        remote.invoke("x", response_format={"type": "xml"})


def test_chat_http_connection_refused_is_clear():

    dead = ChatOpenAICompatible(base_url=f"http://127.0.0.1:{free_port()}", model=MODEL, max_retries=1, timeout=5)
    with pytest.raises(BackendError, match="cannot connect.*cpm serve"):
        dead.invoke("hi")
