"""Scale-out over several base URLs, against real servers: two `cpm serve` processes share concurrent requests,
one killed mid-run leaves the run to the other, and peers that are down, silent or not OpenAI servers at all are
retried elsewhere within bounds, then reported in one error that names each server."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest

from agents.chat import BackendError, ChatOpenAICompatible
from agents.chat.factory import add_backend_arguments
from chat_checks import free_port
from conftest import ServeProcess

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def second_serve(serve_url):
    proc = ServeProcess()
    try:
        yield proc, proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture()
def not_openai():
    """A real HTTP server that is not an OpenAI server (Python's file server: POST -> 501, HTML)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def silent():
    """A port that accepts connections (the kernel's backlog) but never answers: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def _served(chat) -> dict[str, int]:
    return {e.url: e.served for e in chat._transport.pool.endpoints}


async def _many(chat, n: int) -> list[str]:
    replies = await asyncio.gather(*(chat.ainvoke(f"Say a number above {i}.") for i in range(n)))
    return [str(r.content) for r in replies]


def test_scaleout_spreads_and_survives_a_server_killed_mid_run(serve_url, second_serve):
    proc, second_url = second_serve
    chat = ChatOpenAICompatible(base_url=f"{serve_url},{second_url}", model=MODEL, max_tokens=8, timeout=120)
    assert len(chat._transport.pool) == 2
    assert all(asyncio.run(_many(chat, 6)))
    served = _served(chat)
    assert sum(served.values()) == 6 and min(served.values()) >= 2, served  # both servers took a share

    async def kill_during_run() -> list[str]:
        chat.max_tokens = 200
        run = asyncio.ensure_future(asyncio.gather(*(chat.ainvoke(f"Write a long story about a cat named {i}.")
                                                     for i in range(6))))
        second = {e.url: e for e in chat._transport.pool.endpoints}[second_url]
        while second.in_flight == 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # its requests are being generated now
        proc.proc.kill()
        return [str(r.content) for r in await run]

    replies = asyncio.run(kill_during_run())
    assert len(replies) == 6 and all(replies)  # the killed server's requests were retried on the other
    killed = {e.url: e for e in chat._transport.pool.endpoints}[second_url]
    assert killed.last_error and killed.benched_until > 0, killed  # it failed a request in flight
    # and later requests skip the dead one without waiting for it
    t0 = time.monotonic()
    assert chat.invoke("Hi.").content
    assert time.monotonic() - t0 < 60


def test_scaleout_skips_peers_that_are_silent_or_not_openai(serve_url, not_openai, silent):
    chat = ChatOpenAICompatible(base_url=[not_openai, silent, serve_url], model=MODEL, max_tokens=4, timeout=3,
                                max_retries=1)
    for _ in range(3):
        assert chat.invoke("Hi.").content
    by_url = {e.url: e for e in chat._transport.pool.endpoints}
    assert by_url[serve_url].served == 3
    assert "HTTP 501" in by_url[not_openai].last_error
    assert "did not answer within 3s" in by_url[silent].last_error


def test_scaleout_all_down_is_one_error_naming_each_server(not_openai):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    chat = ChatOpenAICompatible(base_url=[dead, not_openai], model=MODEL, max_retries=1, timeout=5)
    with pytest.raises(BackendError) as err:
        chat.invoke("hi")
    message = str(err.value)
    assert "\n" not in message and message.startswith("all 2 servers failed (3 tries)")
    assert f"[{dead}] cannot connect" in message and f"[{not_openai}] {not_openai} failed (HTTP 501)" in message
    with pytest.raises(BackendError, match="all 2 servers failed"):
        list(chat.stream("hi"))


def test_scaleout_base_url_repeated_on_the_command_line():
    import argparse

    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    args = parser.parse_args(["--base-url", "http://a:1", "--base-url", "http://b:2/v1,http://c:3"])
    assert args.base_url == "http://a:1,http://b:2/v1,http://c:3"
    chat = ChatOpenAICompatible(base_url=args.base_url, model="m")
    assert [e.url for e in chat._transport.pool.endpoints] == ["http://a:1/v1", "http://b:2/v1", "http://c:3/v1"]
