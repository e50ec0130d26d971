"""A scripted chat model for testing the tool graph's mechanics only (approval, step limit, parallel calls,
bad calls). The end-to-end test uses the real default model through agents.chat."""
from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


def call(name: str, args: dict | None = None, id: str | None = None) -> dict:
    return {"name": name, "args": args or {}, "id": id or f"call_{name.replace('.', '_')}", "type": "tool_call"}


def calls(*tool_calls: dict, text: str = "") -> AIMessage:
    return AIMessage(content=text, tool_calls=list(tool_calls))


class ScriptedChatModel(BaseChatModel):
    """Replies with the next scripted AIMessage (or `fallback` once the script is used up) and records the
    messages and tool names of every request."""

    script: list[Any] = Field(default_factory=list)
    fallback: Any = None
    requests: list[dict] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, **kwargs):
        return self.bind(tools=tools, **kwargs)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.requests.append({"messages": list(messages),
                              "tools": [t["function"]["name"] for t in kwargs.get("tools") or []]})
        reply = self.script.pop(0) if self.script else (self.fallback or AIMessage("done"))
        # A fresh copy: a reused message id would make LangGraph replace the earlier message, not append.
        reply = reply.model_copy(update={"id": None})
        return ChatResult(generations=[ChatGeneration(message=reply)])
