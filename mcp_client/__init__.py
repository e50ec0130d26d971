"""MCP client: server config, one long-lived session per server, namespaced tools, readable results.

Import-light: the SDK is loaded only when a manager starts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["MCPManager", "ToolSpec", "ToolResult", "ServerStatus", "ResourceSpec", "PromptSpec",
           "load_config", "parse_config", "find_config", "MCPError"]

_WHERE = {"MCPManager": "manager", "ToolSpec": "records", "ToolResult": "records", "ServerStatus": "records",
          "ResourceSpec": "records", "PromptSpec": "records", "load_config": "config",
          "parse_config": "config", "find_config": "config", "MCPError": "errors"}

if TYPE_CHECKING:
    from mcp_client.config import find_config, load_config, parse_config
    from mcp_client.errors import MCPError
    from mcp_client.manager import MCPManager
    from mcp_client.records import PromptSpec, ResourceSpec, ServerStatus, ToolResult, ToolSpec


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'mcp_client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"mcp_client.{_WHERE[name]}"), name)
