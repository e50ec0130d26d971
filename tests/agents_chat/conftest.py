"""Fixtures for the chat-layer tests: the real tokenizer, the real engine and a real `cpm serve`, once each.

`cpm serve` is started as a subprocess as soon as the engine fixture is first used, so its model load overlaps
with the in-process tests instead of adding to them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from chat_checks import free_port

REPO = Path(__file__).resolve().parents[2]
# With the editable install, `pytest` (not `python -m pytest`) may only see tests/engine/ (a folder without
# __init__.py) as `engine`; the checkout on sys.path makes the real package win.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


class ServeProcess:
    """`cpm serve` on a free 127.0.0.1 port, as a user would start it."""

    def __init__(self, model: str = "smollm2-135m"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = open(os.environ.get("CPM_SERVE_TEST_LOG", os.devnull), "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "serve", "--model", model,
                                      "--port", str(self.port)], cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 600.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"cpm serve exited with {self.proc.returncode} (set CPM_SERVE_TEST_LOG=file to see why)")
            try:
                if httpx.get(self.url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                    return self.url
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        pytest.fail(f"cpm serve did not come up on {self.url} within {timeout:g}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def chat_tokenizer(smollm2_path):
    """SmolLM2's tokenizer read from the GGUF file (no engine needed)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)


@pytest.fixture(scope="session")
def serve_process(smollm2_path):
    proc = ServeProcess()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def chat_model(serve_process):
    """ChatEngine on the real smollm2-135m (greedy, short replies)."""
    from agents.chat import ChatEngine

    return ChatEngine.from_model("smollm2-135m", max_tokens=8)


@pytest.fixture(scope="session")
def serve_url(serve_process) -> str:
    return serve_process.wait_ready()
