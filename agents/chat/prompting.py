"""Render OpenAI-style messages plus tool schemas into the prompt text the model expects.

When the model's chat template knows about tools (it mentions `tools`), the template renders them itself;
otherwise (SmolLM2, MiniCPM4's plain ChatML) a Hermes-style block describing the tools and the `<tool_call>`
format is added to the system message, past tool calls are written back in that format and tool results are
wrapped in `<tool_response>` inside a user turn, so any ChatML-like template can show them.
"""
from __future__ import annotations

import json
from typing import Callable

from agents.chat.toolcalls import render_tool_call
from agents.chat.tooling import ToolChoice

TOOLS_PREAMBLE = (
    "You can call functions to help with the user's request. The functions are described inside <tools></tools> "
    "as JSON schemas:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, reply with a JSON object holding its name and arguments inside <tool_call></tool_call> "
    'tags, exactly like this:\n<tool_call>\n{{"name": "<function-name>", "arguments": {{<arguments as JSON>}}}}\n'
    "</tool_call>\nUse only the functions and parameters listed; do not guess missing required values."
)
MUST_CALL = "\nAnswer with a function call only{which}."


def template_supports_tools(chat_template: str | None) -> bool:
    return bool(chat_template) and "tools" in chat_template


def render_prompt(apply_template: Callable[..., str], chat_template: str | None, messages: list[dict],
                  tools: list[dict], choice: ToolChoice) -> str:
    """The prompt text; `apply_template(messages, tools=..., add_generation_prompt=True)` renders a template."""
    if not tools or choice.mode == "none":
        return apply_template(_plain(messages), tools=None, add_generation_prompt=True)
    if template_supports_tools(chat_template):
        return apply_template(_for_tool_template(messages), tools=tools, add_generation_prompt=True)
    return apply_template(_with_hermes_block(_plain(messages), tools, choice), tools=None, add_generation_prompt=True)


def tools_system_block(tools: list[dict], choice: ToolChoice) -> str:
    block = TOOLS_PREAMBLE.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
    if choice.mode == "required":
        which = f" to {choice.names[0]}" if len(choice.names) == 1 else ""
        block += MUST_CALL.format(which=which)
    return block


def _with_hermes_block(messages: list[dict], tools: list[dict], choice: ToolChoice) -> list[dict]:
    block = tools_system_block(tools, choice)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{block}"}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def _plain(messages: list[dict]) -> list[dict]:
    """Text-only messages: tool calls written back as <tool_call> text, tool results as <tool_response> turns."""
    out: list[dict] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = [render_tool_call(c["function"]["name"], _args(c["function"].get("arguments")))
                     for c in m["tool_calls"]]
            content = "\n".join(([content] if content else []) + calls)
        if role == "tool":
            response = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("_tool_turn"):  # several results answer one assistant turn
                out[-1]["content"] += "\n" + response
                continue
            out.append({"role": "user", "content": response, "_tool_turn": True})
            continue
        out.append({"role": role, "content": content})
    return [{"role": m["role"], "content": m["content"]} for m in out]


def _for_tool_template(messages: list[dict]) -> list[dict]:
    """HF tool-aware templates take tool-call arguments as dicts, not JSON strings."""
    out = []
    for m in messages:
        m = dict(m)
        m["content"] = m.get("content") or ""
        if m.get("tool_calls"):
            m["tool_calls"] = [{"type": "function", "id": c.get("id"),
                                "function": {"name": c["function"]["name"],
                                             "arguments": _args(c["function"].get("arguments"))}}
                               for c in m["tool_calls"]]
        out.append(m)
    return out


def _args(arguments) -> dict:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return {"_raw": arguments}  # keep what the caller sent visible to the model instead of dropping it
    return value if isinstance(value, dict) else {"_raw": value}
