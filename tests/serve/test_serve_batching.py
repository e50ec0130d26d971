"""`cpm serve` batches waiting non-streaming requests: real engine, real HTTP, concurrent clients."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from agents.chat.engine_runner import EngineRunner
from engine import Engine
from tui.server import BackgroundServer, create_app

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?",
             "Say hello.", "What is the capital of France?"]


@pytest.fixture(scope="module")
def batching_server():
    engine = Engine.load("smollm2-135m", device="cpu", max_batch=4)
    server = BackgroundServer(create_app(EngineRunner(engine), "smollm2-135m"), port=_free_port()).start()
    yield engine, server
    server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _ask(client: httpx.AsyncClient, url: str, question: str) -> dict:
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": question}], "max_tokens": 12}
    r = await client.post(f"{url}/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


async def test_concurrent_requests_share_batches(batching_server):
    engine, server = batching_server
    async with httpx.AsyncClient() as client:
        replies = await asyncio.gather(*[_ask(client, server.url, q) for q in QUESTIONS])
        health = (await client.get(server.url.removesuffix("/v1") + "/health")).json()
    texts = [r["choices"][0]["message"]["content"] for r in replies]
    assert all(t.strip() for t in texts), texts
    assert health["batched_requests"] == len(QUESTIONS)
    assert health["batches"] < len(QUESTIONS) and health["largest_batch"] >= 2, health
    assert texts[0] == texts[-1]  # the same greedy question gets the same answer wherever it sat in a batch
    for r in replies:
        assert r["usage"]["completion_tokens"] <= 12


async def test_constrained_requests_still_run_alone(batching_server):
    _, server = batching_server
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Give a city as JSON."}],
            "max_tokens": 24, "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": {
                "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                "required": ["city"], "additionalProperties": False}}}}
    async with httpx.AsyncClient() as client:
        before = (await client.get(server.url.removesuffix("/v1") + "/health")).json()["batched_requests"]
        r = await client.post(f"{server.url}/chat/completions", json=body, timeout=300)
        after = (await client.get(server.url.removesuffix("/v1") + "/health")).json()["batched_requests"]
    assert r.status_code == 200, r.text
    assert after == before  # the grammar request went through the single-request path
