"""Plain records that cross the package line: what a tool is, what a call returned, how a server is doing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolSpec:
    """One tool, namespaced `server.tool` so that two servers may both have a `search`."""

    name: str                 # "server.tool"
    server: str
    tool: str                 # the server's own name for it
    description: str
    input_schema: dict[str, Any]
    read_only: bool | None = None   # the server's readOnlyHint, when it gives one

    def as_openai_tool(self, name: str | None = None) -> dict[str, Any]:
        """The OpenAI/langchain function-tool dict; `name` overrides when a backend needs other characters."""
        return {"type": "function",
                "function": {"name": name or self.name, "description": self.description,
                             "parameters": self.input_schema or {"type": "object", "properties": {}}}}


@dataclass
class ToolResult:
    """What a call returned, always readable text, errors included, so the agent never sees an exception."""

    name: str
    text: str
    is_error: bool
    duration_s: float
    structured: Any = None     # the server's structuredContent, when it sent one
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "text": self.text, "is_error": self.is_error,
                "duration_s": round(self.duration_s, 4), "truncated": self.truncated}


@dataclass
class ServerStatus:
    """One server's state: `starting`, `ready`, `failed` (could not start) or `crashed` (died after starting)."""

    name: str
    transport: str            # "stdio" | "http"
    where: str                # the command line or the URL
    state: str
    tools: int = 0
    error: str | None = None
    restarts: int = 0
    server_info: str | None = None   # "name version" reported by the server

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ResourceSpec:
    server: str
    uri: str
    name: str
    description: str = ""
    mime_type: str | None = None


@dataclass(frozen=True)
class PromptSpec:
    server: str
    name: str
    description: str = ""
    arguments: list[str] = field(default_factory=list)
