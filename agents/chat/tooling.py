"""Tools and tool_choice in one normal form, whatever the caller passed (langchain tools, pydantic, OpenAI dicts)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.errors import AgentError


@dataclass(frozen=True)
class ToolChoice:
    """`mode` is "none", "auto" or "required"; `names` narrows the tools a call may use (forced tool)."""

    mode: str
    names: tuple[str, ...] = ()


def to_openai_tools(tools: list[Any] | None) -> list[dict]:
    """OpenAI `{"type": "function", "function": {name, description, parameters}}` dicts, parameters always set."""
    if not tools:
        return []
    from langchain_core.utils.function_calling import convert_to_openai_tool

    out = []
    for tool in tools:
        spec = convert_to_openai_tool(tool)
        if spec.get("type") != "function" or "name" not in spec.get("function", {}):
            raise AgentError(f"unsupported tool {tool!r}: give a function, pydantic class, langchain tool "
                             'or {"type": "function", "function": {"name": ..., "parameters": {...}}}')
        fn = dict(spec["function"])
        fn.setdefault("parameters", {"type": "object", "properties": {}})
        out.append({"type": "function", "function": fn})
    return out


def tool_names(tools: list[dict]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def normalize_tool_choice(choice: Any, tools: list[dict]) -> ToolChoice:
    """Read langchain ("any", a tool name, True) and OpenAI ("required", {"type": "function", ...}) spellings."""
    names = tool_names(tools)
    if not tools or choice in (None, "auto"):
        return ToolChoice("auto" if tools else "none")
    if choice in ("none", False):
        return ToolChoice("none")
    if choice in ("any", "required", True):
        return ToolChoice("required", tuple(names))
    name = None
    if isinstance(choice, str):
        name = choice
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
    if not name:
        raise AgentError(f"tool_choice {choice!r} is not understood: use 'auto', 'none', 'required' or a tool name")
    if name not in names:
        raise AgentError(f"tool_choice names {name!r}, which is not a bound tool (bound: {', '.join(names)})")
    return ToolChoice("required", (name,))


def tool_binding(tools: Any, tool_choice: Any, kwargs: dict) -> dict:
    """The `bind` arguments of a chat model's `bind_tools`: tools in OpenAI form, the choice checked now (a choice
    naming an unbound tool fails early, not at the first call)."""
    formatted = to_openai_tools(list(tools))
    normalize_tool_choice(tool_choice, formatted)
    if "ls_structured_output_format" in kwargs:
        # with_structured_output: one call is the answer. Left parallel, a small model repeats the call until
        # max_tokens (SmolLM2 wrote the same call 14 times, 512 tokens a FactScore sentence).
        kwargs = {"parallel_tool_calls": False, **kwargs}
    return {"tools": formatted, "tool_choice": tool_choice, **kwargs}
