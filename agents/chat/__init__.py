"""Chat models for the agents: `ChatEngine` (in-process engine), `ChatOpenAICompatible` (HTTP), `make_chat_model`.

Import-light on purpose: names are resolved on first use, so `import agents.chat` does not import torch,
xgrammar or httpx.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ChatEngine": "agents.chat.engine_chat",
    "ChatOpenAICompatible": "agents.chat.openai_chat",
    "BackendError": "agents.chat.openai_chat",
    "make_chat_model": "agents.chat.factory",
    "parse_tool_calls": "agents.chat.toolcalls",
    "render_tool_call": "agents.chat.toolcalls",
    "format_errors_for_model": "agents.chat.toolcalls",
    "ParsedOutput": "agents.chat.toolcalls",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agents.chat' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
