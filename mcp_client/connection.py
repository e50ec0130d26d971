"""One server's long-lived MCP session, owned by one task.

The SDK's transports and ClientSession are anyio context managers that must be entered and left by the same
task, so each server gets an owner task that opens them, reports ready, and waits to be told to stop (the
pattern of oterm's `tools/mcp/setup.py`, one exit stack per server). Whatever goes wrong in that task stays
with that server: it is recorded in `status` and never reaches the other servers or the caller.
"""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from mcp_client.config import ServerConfig, StdioServer
from mcp_client.records import ServerStatus, ToolResult, ToolSpec
from mcp_client.redact import redact
from mcp_client.results import result_text, truncate
from mcp_client.transports import open_streams

SHUTDOWN_GRACE_S = 10.0   # the SDK's own stdio teardown is bounded at about 6 s (close stdin, TERM, KILL)
PING_TIMEOUT_S = 3.0


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups, which is what the user needs."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    exc = _leaf(exc)
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"command not found: {exc.filename}"
    text = str(exc).strip() or type(exc).__name__
    return text if ":" in text or " " in text else f"{type(exc).__name__}: {text}"


class ServerConnection:
    """Start, call, restart and stop one server. `status` always says where it stands."""

    def __init__(self, config: ServerConfig, *, connect_timeout: float, max_result_chars: int):
        self.config = config
        self.connect_timeout = connect_timeout
        self.max_result_chars = max_result_chars
        transport = "stdio" if isinstance(config, StdioServer) else "http"
        self.status = ServerStatus(config.name, transport, config.where, "stopped")
        self.tools: dict[str, ToolSpec] = {}
        self.capabilities: Any = None
        self.session: Any = None
        self._started_once = False
        self._lock: anyio.Lock | None = None
        self._stop: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._log_path: Path | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def ensure_ready(self, task_group) -> bool:
        """Start the server if it is not running (first use, or after a crash); True when it is ready."""
        self._lock = self._lock or anyio.Lock()
        async with self._lock:
            if self.status.state == "ready" and self.session is not None:
                return True
            if self._done is not None:
                await self._shutdown()
            if self._started_once:
                self.status.restarts += 1
            await self._start(task_group)
            return self.status.state == "ready"

    async def _start(self, task_group) -> None:
        self.status.state, self.status.error = "starting", None
        ready, self._stop, self._done = anyio.Event(), anyio.Event(), anyio.Event()
        self._new_log()
        task_group.start_soon(self._own, ready)
        with anyio.move_on_after(self.connect_timeout):
            await ready.wait()
        if not ready.is_set():
            self._set("failed", f"no answer to the MCP handshake within {self.connect_timeout:g}s")
            await self._shutdown()

    async def _own(self, ready: anyio.Event) -> None:
        """The owner task: open transport and session, publish them, wait for stop, close both."""
        from mcp import ClientSession
        from mcp.types import Implementation

        with anyio.CancelScope() as self._scope:
            try:
                async with AsyncExitStack() as stack:
                    with open(self._log_path, "a", encoding="utf-8", errors="replace") as errlog:
                        read, write = await open_streams(stack, self.config, errlog)
                    session = await stack.enter_async_context(
                        ClientSession(read, write, client_info=Implementation(name="cpm-suite", version="0.1.0")))
                    init = await session.initialize()
                    self.capabilities = init.capabilities
                    await self._load_tools(session)
                    info = init.server_info
                    self.session, self._started_once = session, True
                    self.status.server_info = f"{info.name} {info.version}".strip()
                    self._set("ready", None)
                    ready.set()
                    await self._stop.wait()
            except Exception as exc:  # noqa: BLE001 - any failure of a third-party server is reported, not raised
                if not self._stop.is_set():
                    why = describe(exc)
                    if self.status.transport == "http" and not ready.is_set():
                        why += f" ({self.config.where}: is the server running, and are URL and headers right?)"
                    self._set("crashed" if ready.is_set() else "failed", self._explain(why))
            finally:
                self.session = None
                ready.set()
                self._done.set()

    async def _load_tools(self, session) -> None:
        from mcp.types import PaginatedRequestParams

        tools, cursor = [], None
        while True:
            page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        name = self.config.name
        self.tools = {t.name: ToolSpec(f"{name}.{t.name}", name, t.name, t.description or "",
                                       dict(t.input_schema or {}),
                                       getattr(t.annotations, "read_only_hint", None) if t.annotations else None)
                      for t in tools}
        self.status.tools = len(self.tools)

    async def _shutdown(self) -> None:
        """Ask the owner task to close the session; cancel it if it does not within the grace period."""
        if self._done is None:
            return
        self._stop.set()
        with anyio.move_on_after(SHUTDOWN_GRACE_S):
            await self._done.wait()
        if not self._done.is_set() and self._scope is not None:
            self._scope.cancel()
            await self._done.wait()
        self._done = None
        self.session = None

    async def stop(self) -> None:
        await self._shutdown()
        if self.status.state in ("ready", "starting"):
            self._set("stopped", None)
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    # ---- calls -----------------------------------------------------------------------------------------
    async def call(self, spec: ToolSpec, arguments: dict, timeout: float) -> ToolResult:
        """Call one tool; every failure becomes an error ToolResult that says what happened and what next."""
        from mcp.shared.exceptions import MCPError as SdkError
        from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT
        from pydantic import ValidationError

        session, started = self.session, time.perf_counter()

        def done(text: str, is_error: bool, structured: Any = None) -> ToolResult:
            text, cut = truncate(self.redact(text) if is_error else text, self.max_result_chars)
            return ToolResult(spec.name, text, is_error, time.perf_counter() - started, structured, cut)

        if session is None:
            return done(f"server '{self.config.name}' is {self.status.state}: {self.status.error}", True)
        try:
            res = await session.call_tool(spec.tool, arguments, read_timeout_seconds=timeout)
        except SdkError as exc:
            if exc.code == CONNECTION_CLOSED:
                await self._lost(f"the server exited during a call to {spec.tool}")
                return done(f"server '{self.config.name}' crashed during the call: {self.status.error}. "
                            "It will be restarted on the next call.", True)
            if exc.code == REQUEST_TIMEOUT:
                note = await self._after_timeout()
                return done(f"{spec.name} did not answer within {timeout:g}s and was abandoned{note}", True)
            return done(f"{spec.name} failed: {exc.message}", True)
        except ValidationError as exc:
            return done(f"server '{self.config.name}' sent a malformed result: {exc.errors()[0]['msg']}", True)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            await self._lost(f"the connection broke during a call to {spec.tool} ({describe(exc)})")
            return done(f"server '{self.config.name}' is gone: {self.status.error}. "
                        "It will be restarted on the next call.", True)
        except Exception as exc:  # noqa: BLE001 - a third-party server can make the SDK raise anything;
            # the agent must still get text back and the session must go on.
            return done(f"{spec.name} failed: {describe(exc)}", True)
        return done(result_text(res.content, res.structured_content, res.is_error), bool(res.is_error),
                    res.structured_content)

    async def _after_timeout(self) -> str:
        """A timed-out call may mean one slow tool or a server that stopped answering; a ping tells which."""
        try:
            with anyio.fail_after(PING_TIMEOUT_S):
                await self.session.send_ping()
            return "; the server is still answering"
        except Exception:  # noqa: BLE001 - any failure to answer a ping means the same thing here
            await self._lost("the server stopped answering after a call timed out")
            return "; the server stopped answering and will be restarted on the next call"

    async def _lost(self, why: str) -> None:
        if self.status.state == "ready":
            self._set("crashed", self._explain(why))
        self.session = None
        self._lock = self._lock or anyio.Lock()
        async with self._lock:
            await self._shutdown()

    # ---- listings --------------------------------------------------------------------------------------
    async def list_resources(self) -> list:
        if self.session is None or not getattr(self.capabilities, "resources", None):
            return []
        return list((await self.session.list_resources()).resources)

    async def list_prompts(self) -> list:
        if self.session is None or not getattr(self.capabilities, "prompts", None):
            return []
        return list((await self.session.list_prompts()).prompts)

    # ---- helpers ---------------------------------------------------------------------------------------
    def _set(self, state: str, error: str | None) -> None:
        self.status.state, self.status.error = state, self.redact(error) if error else error

    def redact(self, text: str) -> str:
        """`text` without this server's ${ENV} values or URL tokens (a failing server may echo its own argv)."""
        return redact(text, self.config.secrets)

    def _new_log(self) -> None:
        """A fresh file for the server's stderr; its tail explains a crash better than any exit code."""
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"cpm-mcp-{self.config.name}-", suffix=".log")
        os.close(fd)
        self._log_path = Path(path)

    def stderr_tail(self, max_chars: int = 400) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        # The last lines say why it died; servers that log with rich pad lines with spaces, so squeeze them.
        lines = [" ".join(ln.split()) for ln in text.splitlines() if ln.strip()][-3:]
        return " | ".join(lines)[-max_chars:]

    def _explain(self, why: str) -> str:
        tail = self.stderr_tail()
        return f"{why} (server stderr: {tail})" if tail else why
