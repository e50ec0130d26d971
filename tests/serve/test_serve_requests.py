"""`cpm serve` refuses malformed bodies as OpenAI does (400 + error.message/param/type) on a kept connection, and
serves /v1/completions, /v1/embeddings and JSON 404s: real engine, real embedder, real HTTP."""
from __future__ import annotations

import http.client
import json
import socket
import threading

import httpx
import pytest

from agents.chat.engine_runner import EngineRunner
from engine import Engine
from retrieval.embed import Embedder
from tui.server import BackgroundServer, create_app

MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
    "additionalProperties": False}}}

# (case, body, the param the error must name). Each once gave a 500, a traceback or a silent change (issue 25).
BAD_CHAT = [
    ("stop is a number", {"stop": 5}, "stop"),
    ("stop is a list of numbers", {"stop": [1, 2]}, "stop"),
    ("seed is a string", {"seed": "42"}, "seed"),
    ("seed beyond 64 bits", {"seed": 2 ** 70}, "seed"),
    ("max_tokens is Infinity", {"max_tokens": float("inf")}, "max_tokens"),
    ("max_tokens is 0", {"max_tokens": 0}, "max_tokens"),
    ("max_tokens is negative", {"max_tokens": -3}, "max_tokens"),
    ("max_tokens is a float", {"max_tokens": 5.5}, "max_tokens"),
    ("max_tokens is a string", {"max_tokens": "5"}, "max_tokens"),
    ("max_completion_tokens is 0", {"max_completion_tokens": 0}, "max_completion_tokens"),
    ("temperature is NaN", {"temperature": float("nan")}, "temperature"),
    ("temperature above 2", {"temperature": 7}, "temperature"),
    ("temperature is a bool", {"temperature": True}, "temperature"),
    ("top_p above 1", {"top_p": 1.5}, "top_p"),
    ("top_p is -Infinity", {"top_p": float("-inf")}, "top_p"),
    ("response_format is a string", {"response_format": "json"}, "response_format"),
    ("response_format type unknown", {"response_format": {"type": "xml"}}, "response_format.type"),
    ("json_schema without schema", {"response_format": {"type": "json_schema"}}, "response_format"),
    ("tool_calls is a string", {"messages": [{"role": "assistant", "tool_calls": "x"}]}, "messages[0].tool_calls"),
    ("unknown role", {"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
    ("image content part", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content"),
    ("messages empty", {"messages": []}, "messages"),
    ("messages not a list", {"messages": "hi"}, "messages"),
    ("unknown tool_choice", {"tools": [TOOL], "tool_choice": "nope"}, "tool_choice"),
    ("required without tools", {"tool_choice": "required"}, "tool_choice"),
    ("named tool not given", {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice"),
    ("tool without function", {"tools": [{"type": "function"}]}, "tools[0].function"),
    ("tool name with spaces", {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
     "tools[0].function.name"),
    ("n is 2", {"n": 2}, "n"),
    ("stream is a string", {"stream": "yes"}, "stream"),
    ("parallel_tool_calls is a string", {"tools": [TOOL], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ("17 stop strings", {"stop": [str(i) for i in range(17)]}, "stop"),
    ("tool parameters not a JSON Schema", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"properties": []}}}}}]}, "tools[0].function.parameters"),
    ("response schema not a JSON Schema", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "r", "schema": {"type": "nope"}}}}, "response_format.json_schema.schema"),
]


@pytest.fixture(scope="module")
def server():
    engine = Engine.load(MODEL, device="cpu")
    runner = EngineRunner(engine)
    srv = BackgroundServer(create_app(runner, MODEL, Embedder("minilm", device="cpu")), port=_free_port()).start()
    yield srv, runner
    srv.stop()


@pytest.fixture(scope="module")
def bare_server():
    """No embedder: /v1/embeddings must say so. The engine is loaded again (cheap next to the test's worth)."""
    engine = Engine.load(MODEL, device="cpu")
    srv = BackgroundServer(create_app(EngineRunner(engine), MODEL), port=_free_port()).start()
    yield srv
    srv.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KeptConnection:
    """One HTTP/1.1 connection; `post` fails the test if the server closed it after answering."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=300)
        self.sock = None

    def post(self, path: str, raw: bytes) -> tuple[int, dict]:
        self.conn.request("POST", "/v1" + path, body=raw, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        payload = json.loads(resp.read())
        assert (resp.getheader("connection") or "").lower() != "close", "the server closed the connection"
        if self.sock is None:
            self.sock = self.conn.sock
        assert self.conn.sock is self.sock, "the client had to reconnect"
        return resp.status, payload


@pytest.mark.parametrize("case,patch,param", BAD_CHAT, ids=[c[0] for c in BAD_CHAT])
def test_bad_chat_bodies_are_openai_400s_on_a_kept_connection(server, case, patch, param):
    srv, _ = server
    conn = KeptConnection(srv.url)
    body = {"model": MODEL, "messages": HI, "max_tokens": 2, **patch}
    status, payload = conn.post("/chat/completions", json.dumps(body).encode())
    assert status == 400, (case, payload)
    err = payload["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"], (case, err)
    status, ok = conn.post("/chat/completions", json.dumps({"messages": HI, "max_tokens": 2}).encode())
    assert status == 200 and ok["choices"][0]["message"]["content"] is not None


@pytest.mark.parametrize("raw,needle", [
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"messages": ' + b"[" * 200 + b"]" * 200 + b"}", "nested"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"", "not valid JSON"),
], ids=["100k brackets", "200 levels", "not json", "not utf-8", "a list", "empty"])
def test_unparseable_bodies(server, raw, needle):
    conn = KeptConnection(server[0].url)
    status, payload = conn.post("/chat/completions", raw)
    assert status == 400 and needle in payload["error"]["message"]
    assert conn.post("/chat/completions", json.dumps({"messages": HI, "max_tokens": 1}).encode())[0] == 200


def test_oversized_body_is_413_and_the_connection_kept(server):
    conn = KeptConnection(server[0].url)
    huge = json.dumps({"messages": [{"role": "user", "content": "a " * 5_000_000}]}).encode()
    status, payload = conn.post("/chat/completions", huge)
    assert status == 413 and payload["error"]["code"] == "request_too_large"
    assert conn.post("/chat/completions", json.dumps({"messages": HI, "max_tokens": 1}).encode())[0] == 200


def test_a_1mb_prompt_is_the_same_400_streamed_or_not(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "word " * 200_000}], "max_tokens": 2}
    plain = httpx.post(server[0].url + "/chat/completions", json=body, timeout=300)
    streamed = httpx.post(server[0].url + "/chat/completions", json={**body, "stream": True}, timeout=300)
    assert plain.status_code == streamed.status_code == 400
    assert plain.json()["error"]["code"] == streamed.json()["error"]["code"] == "context_length_exceeded"


def test_top_p_zero_is_greedy_not_one(server):
    body = {"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 8, "temperature": 1.5,
            "top_p": 0, "seed": 1}
    texts = {httpx.post(server[0].url + "/chat/completions", json={**body, "seed": s}, timeout=300)
             .json()["choices"][0]["message"]["content"] for s in (1, 2, 3)}
    greedy = httpx.post(server[0].url + "/chat/completions", timeout=300, json={
        "messages": body["messages"], "max_tokens": 8}).json()["choices"][0]["message"]["content"]
    assert texts == {greedy}  # top_p 0 keeps only the most likely token, whatever the seed and temperature


def test_forced_tool_call_is_tool_calls_with_null_content(server):
    body = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [TOOL],
            "tool_choice": "required", "max_tokens": 40}
    out = httpx.post(server[0].url + "/chat/completions", json=body, timeout=300).json()["choices"][0]
    assert out["finish_reason"] == "tool_calls" and out["message"]["content"] is None
    assert out["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    events = _sse(httpx.post(server[0].url + "/chat/completions", json={**body, "stream": True}, timeout=300))
    deltas = [e["choices"][0] for e in events if e.get("choices")]
    assert deltas[-1]["finish_reason"] == "tool_calls"
    assert not "".join(d["delta"].get("content") or "" for d in deltas).strip()
    assert any(d["delta"].get("tool_calls") for d in deltas)


def test_text_completions_plain_and_streamed(server):
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 5}
    out = httpx.post(server[0].url + "/completions", json=body, timeout=300).json()
    assert out["object"] == "text_completion" and out["usage"]["completion_tokens"] <= 5
    text = out["choices"][0]["text"]
    assert text and out["choices"][0]["finish_reason"] in ("stop", "length")
    events = _sse(httpx.post(server[0].url + "/completions", json={**body, "stream": True}, timeout=300))
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == text  # same greedy text
    echo = httpx.post(server[0].url + "/completions", json={**body, "echo": True}, timeout=300).json()
    assert echo["choices"][0]["text"] == body["prompt"] + text
    bad = httpx.post(server[0].url + "/completions", json={**body, "logprobs": 2}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "logprobs"
    ids = httpx.post(server[0].url + "/completions", json={"prompt": [10 ** 9], "max_tokens": 1}, timeout=30)
    assert ids.status_code == 400 and ids.json()["error"]["param"] == "prompt"


def test_openai_client_text_completions(server):
    from openai import OpenAI

    client = OpenAI(base_url=server[0].url, api_key="unused", max_retries=0, timeout=300)
    out = client.completions.create(model=MODEL, prompt="One, two,", max_tokens=3)
    assert out.choices[0].text and out.usage.completion_tokens <= 3


def test_embeddings_with_the_index_embedder(server):
    from openai import OpenAI

    client = OpenAI(base_url=server[0].url, api_key="unused", max_retries=0, timeout=300)
    out = client.embeddings.create(model="minilm", input=["a cat", "a kitten", "tax law"])
    vecs = [d.embedding for d in out.data]
    assert len(vecs) == 3 and len(vecs[0]) == 384
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2])
    b64 = httpx.post(server[0].url + "/embeddings", json={"input": "a cat", "encoding_format": "base64"}, timeout=60)
    import base64

    import numpy as np
    assert np.allclose(np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), "<f4"), vecs[0], atol=1e-5)
    bad = httpx.post(server[0].url + "/embeddings", json={"input": ["ok", 3]}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    wrong = httpx.post(server[0].url + "/embeddings", json={"input": "x", "dimensions": 12}, timeout=30)
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "dimensions"


def test_no_embedder_and_unknown_routes_are_json_404s(bare_server):
    r = httpx.post(bare_server.url + "/embeddings", json={"input": "x"}, timeout=30)
    assert r.status_code == 404 and "--index" in r.json()["error"]["message"]
    for method, path in (("POST", "/v1/edits"), ("GET", "/nope"), ("POST", "/v1/audio/speech")):
        r = httpx.request(method, bare_server.url.removesuffix("/v1") + path, timeout=30)
        assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(bare_server.url + "/chat/completions", timeout=30)
    assert r.status_code == 405 and r.json()["error"]["message"]


def test_a_gone_non_streaming_client_stops_its_decoding(server):
    srv, runner = server
    closed = threading.Event()
    real_stream = runner.engine.stream

    def watched(ids, params):  # the real engine stream, noting whether it was closed before its result
        finished = False
        try:
            for chunk in real_stream(ids, params):
                finished = finished or chunk.result is not None
                yield chunk
        finally:
            if not finished:
                closed.set()

    runner.engine.stream = watched
    try:
        body = {"prompt": "Count to one thousand: 1, 2, 3, 4,", "max_tokens": 3000}
        for path, payload in (("/completions", body),
                              ("/chat/completions", {"messages": [{"role": "user", "content": body["prompt"]}],
                                                     "max_tokens": 3000})):
            closed.clear()
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(srv.url + path, json=payload, timeout=httpx.Timeout(300, read=3))
            assert closed.wait(120), f"{path}: the engine kept decoding for a client that had gone"
            ok = httpx.post(srv.url + path, timeout=300, json={**payload, "max_tokens": 2})
            assert ok.status_code == 200
    finally:
        runner.engine.stream = real_stream


def _sse(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    lines = [ln.removeprefix("data: ") for ln in response.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]



def test_an_internal_failure_is_a_json_500_on_a_kept_connection(server, monkeypatch, caplog):
    """Fault injection: the runner raises a bug-like error; the client gets JSON, the log the traceback."""
    srv, runner = server

    def broken(req):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(runner, "prepare", broken)
    conn = KeptConnection(srv.url)
    status, payload = conn.post("/chat/completions", json.dumps({"messages": HI}).encode())
    assert status == 500 and payload["error"]["type"] == "server_error"
    assert "injected" not in payload["error"]["message"]  # internals stay in the log
    assert any("injected fault" in (r.exc_text or "") for r in caplog.records)
    monkeypatch.undo()
    assert conn.post("/chat/completions", json.dumps({"messages": HI, "max_tokens": 1}).encode())[0] == 200
