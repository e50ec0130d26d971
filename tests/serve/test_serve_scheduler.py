"""`cpm serve` on the engine's scheduler: real engine, real HTTP, concurrent clients, /metrics and back-pressure."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from agents.chat.engine_runner import EngineRunner
from engine import Engine
from tui.server import BackgroundServer, create_app

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?",
             "Say hello.", "What is the capital of France?"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def engine():
    engine = Engine.load("smollm2-135m", device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(engine):
    server = BackgroundServer(create_app(EngineRunner(engine), "smollm2-135m"), port=_free_port()).start()
    yield server
    server.stop()


def _body(question: str, **extra) -> dict:
    return {"model": "smollm2-135m", "messages": [{"role": "user", "content": question}], "max_tokens": 12, **extra}


async def _ask(client: httpx.AsyncClient, url: str, question: str) -> dict:
    r = await client.post(f"{url}/chat/completions", json=_body(question), timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


async def _stream(client: httpx.AsyncClient, url: str, question: str) -> str:
    text = []
    async with client.stream("POST", f"{url}/chat/completions", json=_body(question, stream=True), timeout=300) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                text.append(delta.get("content") or "")
    return "".join(text)


async def test_concurrent_streamed_and_plain_requests_decode_together(engine, server):
    steps_before = engine.stats().steps
    async with httpx.AsyncClient() as client:
        replies = await asyncio.gather(*[_ask(client, server.url, q) for q in QUESTIONS],
                                       *[_stream(client, server.url, q) for q in QUESTIONS[:3]])
        metrics = (await client.get(server.url.removesuffix("/v1") + "/metrics")).text
    texts = [r["choices"][0]["message"]["content"] for r in replies[:len(QUESTIONS)]]
    streamed = replies[len(QUESTIONS):]
    assert all(t.strip() for t in texts + streamed), (texts, streamed)
    assert texts[0] == texts[-1]  # the same greedy question gets the same answer wherever it ran in the batch
    # The eight requests shared steps: far fewer steps than their tokens one request at a time would need.
    tokens = sum(r["usage"]["completion_tokens"] for r in replies[:len(QUESTIONS)])
    assert engine.stats().steps - steps_before < tokens + 3 * 12
    assert 'cpm:num_requests_running{model_name="smollm2-135m"}' in metrics
    assert "# TYPE cpm:generation_tokens_total counter" in metrics
    assert 'cpm:kv_blocks_total{model_name="smollm2-135m"}' in metrics


async def test_busy_server_answers_503_with_retry_after(engine):
    server = BackgroundServer(create_app(EngineRunner(engine), "smollm2-135m", max_waiting=0),
                              port=_free_port()).start()
    try:
        limit = engine.loop.scheduler.max_running
        long = _body("Write a long story about a lighthouse keeper.", max_tokens=64)
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(*[client.post(f"{server.url}/chat/completions", json=long, timeout=300)
                                             for _ in range(limit + 2)])
            health = (await client.get(server.url.removesuffix("/v1") + "/health")).json()
        codes = sorted(r.status_code for r in answers)
        assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
        busy = next(r for r in answers if r.status_code == 503)
        assert busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["code"] == "server_busy"
        assert health["admitted"] == 0  # every ticket was given back
    finally:
        server.stop()
