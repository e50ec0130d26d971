"""Forced tool calls (`tool_choice` required or named) on any OpenAI-compatible server, whatever its tool support.

Servers differ (checked against the real ones, see docs/deploy.md): `cpm serve` decodes a forced call under a
grammar; vLLM follows the schema only for functions marked `"strict": true`; llama.cpp's server refuses a
`tool_choice` object and, with a model template that has no tools, writes prose. So the wire request is the
common denominator (a named choice becomes `required` over that one tool; forced tools are marked strict), and a
forced turn that still comes back without a call is asked once more with `response_format` (a JSON schema of the
allowed calls, which all of them decode under a grammar), the JSON then turned into the tool call.
"""
from __future__ import annotations

import json
import uuid

from langchain_core.messages import AIMessage

from agents.chat.tooling import ToolChoice


def wire_tools_and_choice(tools: list[dict], choice: ToolChoice) -> tuple[list[dict], str]:
    """(tools, tool_choice) as every server accepts them: only the allowed tools, strict when forced."""
    if choice.mode != "required":
        return tools, choice.mode
    allowed = [t for t in tools if t["function"]["name"] in choice.names]
    return [{**t, "function": {**t["function"], "strict": True}} for t in allowed], "required"


def is_forced(body: dict) -> bool:
    return bool(body.get("tools")) and body.get("tool_choice") == "required"


def json_call_body(body: dict) -> dict:
    """The same turn without `tools`, asking for one call as JSON under a schema of the allowed calls."""
    tools = [t["function"] for t in body["tools"]]
    variants = [{"type": "object", "properties": {"name": {"type": "string", "enum": [fn["name"]]},
                                                  "arguments": fn.get("parameters") or {"type": "object"}},
                 "required": ["name", "arguments"], "additionalProperties": False} for fn in tools]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    listing = "\n".join(json.dumps({"name": fn["name"], "description": fn.get("description", ""),
                                    "parameters": fn.get("parameters") or {}}, ensure_ascii=False) for fn in tools)
    system = {"role": "system", "content": "Answer with exactly one function call as JSON "
              '{"name": ..., "arguments": {...}}. The functions:\n' + listing}
    out = {k: v for k, v in body.items() if k not in ("tools", "tool_choice", "parallel_tool_calls", "stream",
                                                      "stream_options")}
    out["messages"] = [system, *body["messages"]]
    out["response_format"] = {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}
    return out


def call_from_json(message: AIMessage, names: list[str]) -> AIMessage:
    """The JSON reply of `json_call_body` as a tool call (an invalid call, with the text, when it is not one)."""
    text = str(message.content).strip()
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("name") not in names or not isinstance(data.get("arguments"), dict):
            raise ValueError(f"not a call of {', '.join(names)}")
    except ValueError as exc:
        invalid = {"type": "invalid_tool_call", "name": None, "args": text, "id": None,
                   "error": f"the forced call came back as {type(exc).__name__}: {exc}"}
        return AIMessage(content="", invalid_tool_calls=[invalid], response_metadata=message.response_metadata,
                         usage_metadata=message.usage_metadata)
    call = {"name": data["name"], "args": data["arguments"], "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "tool_call"}
    meta = {**message.response_metadata, "finish_reason": "tool_calls", "forced_call_via": "response_format"}
    return AIMessage(content="", tool_calls=[call], response_metadata=meta, usage_metadata=message.usage_metadata)
