"""Backend selection and HTTP error handling that need no model: options, environment, clear failures."""
from __future__ import annotations

import argparse

import pytest

from agents.chat.factory import add_backend_arguments, chat_model_from_args, make_chat_model
from agents.chat.http_transport import BackendError, normalize_base_url
from agents.chat.tooling import normalize_tool_choice, to_openai_tools
from agents.errors import AgentError


def test_chat_factory_env_and_arguments(monkeypatch):
    monkeypatch.setenv("CPM_BACKEND", "openai")
    monkeypatch.delenv("CPM_BASE_URL", raising=False)
    with pytest.raises(AgentError, match="CPM_BASE_URL"):
        make_chat_model()
    monkeypatch.setenv("CPM_API_KEY", "sekret")
    chat = make_chat_model(base_url="http://127.0.0.1:1/", model="m", max_retries=0)
    assert chat.model_name == "m" and chat._transport.base_url == "http://127.0.0.1:1/v1"
    assert chat._transport.headers == {"Authorization": "Bearer sekret"}
    with pytest.raises(AgentError, match="unknown backend 'vllm'"):
        make_chat_model(backend="vllm")
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    args = parser.parse_args(["--backend", "openai", "--base-url", "http://h:9/v1", "--model", "x"])
    assert chat_model_from_args(args).model_name == "x"


def test_chat_factory_refused_connection_is_one_clear_error():
    chat = make_chat_model(backend="openai", base_url="http://127.0.0.1:1", model="m", max_retries=1, timeout=3)
    with pytest.raises(BackendError, match=r"cannot connect to http://127.0.0.1:1/v1.*cpm serve"):
        chat.invoke("hi")
    with pytest.raises(BackendError, match="cannot connect"):
        chat.list_models()


def test_chat_factory_base_url_and_tool_choice_checks():
    assert normalize_base_url("https://x.org/v1/") == "https://x.org/v1"
    with pytest.raises(AgentError, match="http://"):
        normalize_base_url("localhost:8000")
    tools = to_openai_tools([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert normalize_tool_choice("any", tools).mode == "required"
    assert normalize_tool_choice({"type": "function", "function": {"name": "f"}}, tools).names == ("f",)
    assert normalize_tool_choice("none", tools).mode == "none"
    with pytest.raises(AgentError, match="not a bound tool"):
        normalize_tool_choice("g", tools)
