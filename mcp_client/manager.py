"""MCPManager: every configured server behind one object, tools named `server.tool`.

Use it as an async context manager in one task (it owns a task group):

    async with MCPManager(load_config("mcp.json")) as mcp:
        tools = await mcp.list_tools()
        result = await mcp.call("time.get_current_time", {"timezone": "UTC"})

Servers start together on entry; one that fails is reported in `servers()` and the others work. `call` never
raises for a runtime problem: an unknown tool, bad arguments, a timeout or a crash come back as an error
ToolResult the model can read. `resolve` raises MCPError instead, for front ends that want to refuse early.
"""
from __future__ import annotations

import difflib
import json
import os
import time
from dataclasses import replace
from typing import Any

import anyio

from mcp_client.config import ServerConfig, load_config, parse_config
from mcp_client.connection import ServerConnection
from mcp_client.errors import MCPError
from mcp_client.records import PromptSpec, ResourceSpec, ServerStatus, ToolResult, ToolSpec
from mcp_client.results import DEFAULT_MAX_CHARS


class MCPManager:
    """One long-lived session per server, started on entry and closed on exit."""

    def __init__(self, config: dict[str, ServerConfig] | dict[str, Any] | str | os.PathLike,
                 *, call_timeout: float | None = None, connect_timeout: float = 30.0,
                 max_result_chars: int = DEFAULT_MAX_CHARS):
        if isinstance(config, (str, os.PathLike)):
            config = load_config(config)
        elif "mcpServers" in config:
            config = parse_config(config)
        self.call_timeout = call_timeout   # None: each server's own `timeout` (default 60 s)
        self._conns = {name: ServerConnection(cfg, connect_timeout=connect_timeout,
                                              max_result_chars=max_result_chars)
                       for name, cfg in config.items()}
        self._tg = None

    async def __aenter__(self) -> "MCPManager":
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._start_all()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        try:
            with anyio.CancelScope(shield=True):   # servers are shut down even when the caller was cancelled
                async with anyio.create_task_group() as tg:
                    for conn in self._conns.values():
                        tg.start_soon(conn.stop)
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None

    async def _start_all(self) -> None:
        async with anyio.create_task_group() as tg:
            for conn in self._conns.values():
                tg.start_soon(conn.ensure_ready, self._tg)

    def _running(self) -> None:
        if self._tg is None:
            raise MCPError("MCPManager is not started: use it as `async with MCPManager(...) as mcp:`")

    # ---- what is there ---------------------------------------------------------------------------------
    def servers(self) -> list[ServerStatus]:
        """A snapshot of every server's state (ready, failed, crashed, ...), error and tool count."""
        return [replace(conn.status) for conn in self._conns.values()]

    async def list_tools(self) -> list[ToolSpec]:
        """Tools of every ready server; a server that crashed earlier is restarted first."""
        self._running()
        async with anyio.create_task_group() as tg:
            for conn in self._conns.values():
                if conn.status.state == "crashed":
                    tg.start_soon(conn.ensure_ready, self._tg)
        return [spec for conn in self._conns.values() if conn.status.state == "ready"
                for spec in conn.tools.values()]

    async def list_resources(self) -> list[ResourceSpec]:
        """Resources of servers that offer them; a server that fails to answer is skipped, not fatal."""
        self._running()
        out = []
        for conn in self._conns.values():
            try:
                items = await conn.list_resources()
            except Exception:  # noqa: BLE001 - listing is informational; a broken server must not hide the rest
                continue
            out += [ResourceSpec(conn.config.name, str(r.uri), r.name, r.description or "", r.mime_type)
                    for r in items]
        return out

    async def list_prompts(self) -> list[PromptSpec]:
        """Prompts of servers that offer them; a server that fails to answer is skipped, not fatal."""
        self._running()
        out = []
        for conn in self._conns.values():
            try:
                items = await conn.list_prompts()
            except Exception:  # noqa: BLE001 - as in list_resources
                continue
            out += [PromptSpec(conn.config.name, p.name, p.description or "",
                               [a.name for a in (p.arguments or [])]) for p in items]
        return out

    # ---- calling ---------------------------------------------------------------------------------------
    def resolve(self, name: str) -> ToolSpec:
        """`server.tool` -> its ToolSpec, or MCPError naming what exists. A bare tool name is accepted when
        exactly one server has it (small models often drop the prefix)."""
        server, dot, tool = name.partition(".")
        if not dot:
            matches = [c.tools[name] for c in self._conns.values() if name in c.tools]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise MCPError(f"tool '{name}' is offered by several servers; call one of: "
                               + ", ".join(m.name for m in matches))
            raise MCPError(f"unknown tool '{name}'; tools are named server.tool: {self._tool_hint(name)}")
        conn = self._conns.get(server)
        if conn is None:
            raise MCPError(f"unknown server '{server}'; configured servers: {', '.join(self._conns) or 'none'}")
        if tool not in conn.tools:
            if not conn.tools and conn.status.state != "ready":
                raise MCPError(f"server '{server}' is {conn.status.state}: {conn.status.error}")
            raise MCPError(f"server '{server}' has no tool '{tool}'; {self._tool_hint(tool, conn)}")
        return conn.tools[tool]

    def _tool_hint(self, wanted: str, conn: ServerConnection | None = None) -> str:
        names = list(conn.tools) if conn else [t.name for c in self._conns.values() for t in c.tools.values()]
        # A name the model half-remembered ("current_time") is usually a piece of the real one.
        short = wanted.rpartition(".")[2]
        close = [n for n in names if short and short in n] or difflib.get_close_matches(wanted, names, n=1)
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        return (f"did you mean '{close[0]}'? " if close else "") + f"available: {shown or 'none'}"

    async def call(self, name: str, arguments: dict | str | None = None, *,
                   timeout: float | None = None) -> ToolResult:
        """Call `server.tool`; always returns a ToolResult (is_error=True with the reason when it failed)."""
        self._running()
        started = time.perf_counter()

        def error(text: str) -> ToolResult:
            return ToolResult(name, text, True, time.perf_counter() - started)

        try:
            spec = self.resolve(name)
            arguments = check_arguments(spec, arguments)
        except MCPError as exc:
            return error(str(exc))
        conn = self._conns[spec.server]
        if not await conn.ensure_ready(self._tg):
            return error(f"server '{spec.server}' could not be started: {conn.status.error}")
        return await conn.call(spec, arguments, timeout or self.call_timeout or conn.config.timeout)


def check_arguments(spec: ToolSpec, arguments: dict | str | None) -> dict:
    """Parse (a JSON string is accepted) and validate arguments against the tool's schema; MCPError says
    which field is wrong, which a model can act on better than a server's stack trace."""
    if arguments is None or arguments == "":
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise MCPError(f"arguments for {spec.name} are not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(arguments, dict):
        raise MCPError(f"arguments for {spec.name} must be a JSON object, got {type(arguments).__name__}")
    import jsonschema

    try:
        validator = jsonschema.validators.validator_for(spec.input_schema)(spec.input_schema)
        problem = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except jsonschema.exceptions.SchemaError:
        return arguments   # the server's schema is broken; let the server judge the arguments
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path)
        raise MCPError(f"invalid arguments for {spec.name}: {(where + ': ') if where else ''}{problem.message}")
    return arguments
