"""langchain messages <-> OpenAI chat-completion message dicts (the one wire shape every backend here speaks)."""
from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import (AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage,
                                     ToolMessage)
from langchain_core.messages.tool import invalid_tool_call, tool_call

from agents.chat.reasoning import split_reasoning
from agents.errors import AgentError


def to_openai_messages(messages: list[BaseMessage]) -> list[dict]:
    """OpenAI-style dicts; assistant tool calls carry `arguments` as a JSON string, as on the wire."""
    return [_one(m) for m in messages]


def _one(m: BaseMessage) -> dict:
    if isinstance(m, SystemMessage):
        return {"role": "system", "content": text_of(m.content)}
    if isinstance(m, HumanMessage):
        return {"role": "user", "content": text_of(m.content)}
    if isinstance(m, AIMessage):
        out: dict[str, Any] = {"role": "assistant", "content": text_of(m.content)}
        if m.tool_calls:
            out["tool_calls"] = [{"id": c.get("id") or f"call_{i}", "type": "function",
                                  "function": {"name": c["name"], "arguments": json.dumps(c["args"])}}
                                 for i, c in enumerate(m.tool_calls)]
        return out
    if isinstance(m, ToolMessage):
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": text_of(m.content)}
    if isinstance(m, ChatMessage):
        return {"role": m.role, "content": text_of(m.content)}
    raise AgentError(f"unsupported message type {type(m).__name__}: use system, human, ai or tool messages")


def text_of(content: Any) -> str:
    """Message content as plain text: a string, or the text blocks of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise AgentError(f"message content of type {kind!r} is not supported: these models read text only")
    return "".join(parts)


def from_openai_message(msg: dict, **fields) -> AIMessage:
    """An AIMessage from a response's `choices[0].message`; tool calls with bad JSON become invalid calls.

    Reasoning, as servers send it (`reasoning_content`, `reasoning`) or left in the text (`<think>` blocks),
    goes to `additional_kwargs["reasoning_content"]`, as ChatEngine puts it.
    """
    calls, invalid = [], []
    for c in msg.get("tool_calls") or []:
        fn = c.get("function") or {}
        raw = fn.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(args, dict):
                raise ValueError("arguments is not a JSON object")
            calls.append(tool_call(name=fn.get("name", ""), args=args, id=c.get("id")))
        except (json.JSONDecodeError, ValueError) as exc:
            invalid.append(invalid_tool_call(name=fn.get("name"), args=str(raw), id=c.get("id"),
                                             error=f"arguments are not a JSON object: {exc}"))
    reasoning, content = split_reasoning(msg.get("content") or "")
    content = content.strip() if reasoning else content
    reasoning = msg.get("reasoning_content") or msg.get("reasoning") or reasoning
    extra = {"reasoning_content": reasoning} if reasoning else {}
    return AIMessage(content=content, tool_calls=calls, invalid_tool_calls=invalid, additional_kwargs=extra, **fields)


def tool_calls_to_openai(calls: list[dict]) -> list[dict]:
    """langchain ToolCalls -> OpenAI `tool_calls` entries."""
    return [{"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["args"], ensure_ascii=False)}}
            for c in calls]
