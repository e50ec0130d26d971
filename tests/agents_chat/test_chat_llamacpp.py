"""The same client against a third-party OpenAI-compatible server: llama.cpp's (llama-cpp-python[server]) serving
the same GGUF on 127.0.0.1. Slow and optional: `pip install 'llama-cpp-python[server]'` (a build of minutes),
then `python -m pytest tests/agents_chat/test_chat_llamacpp.py --run-slow`."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import httpx
import pytest

from agents.chat import ChatOpenAICompatible
from chat_checks import assert_schema_valid_call
from chat_tool_schemas import TOOL_SCHEMAS
from conftest import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python[server] is not installed"),
]


@pytest.fixture(scope="module")
def llamacpp_url(smollm2_path):
    port = free_port()
    # chatml-function-calling: llama.cpp's own grammar-based tool calling for ChatML models such as SmolLM2
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path),
                             "--host", "127.0.0.1", "--port", str(port), "--chat_format", "chatml-function-calling",
                             "--model_alias", "smollm2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_chat_llamacpp_plain_stream_and_tool_call(llamacpp_url):
    chat = ChatOpenAICompatible(base_url=llamacpp_url, model="smollm2", max_tokens=8, temperature=0.0)
    assert chat.list_models() == ["smollm2"]
    assert chat.invoke("Say hello.").content.strip()
    assert "".join(c.content for c in chat.stream("Say hello.")).strip()
    tool, question = TOOL_SCHEMAS[0]
    reply = chat.bind_tools([tool], tool_choice=tool["function"]["name"], max_tokens=96).invoke(question)
    assert_schema_valid_call(reply, tool)
