"""Assistant mode: chat with streaming Markdown, MCP tool calls as collapsible blocks, approvals, a servers
panel (state and tools, crashes notified), and a sessions list whose picked session continues.

A turn runs `agents.tools.session.ToolSession.ask` in an async worker on the app's loop: the engine itself
runs in executor threads (langchain's async path), so key presses are answered while it generates. The MCP
servers and the session live in one long-lived owner task (`AgentHost`), since their task groups must be
entered and left by the same task.
"""
from __future__ import annotations

import asyncio
import json

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Collapsible, Input, Markdown, Static, Tree

from agents.events import (Answer, AnswerToken, ChatEvent, InvalidCall, Question, ReasoningToken, ToolCall,
                           ToolResult)
from tui.screens.approval import ApprovalScreen
from tui.widgets import RateMeter, cancel_workers
from tui.widgets.telemetry import ReasoningBlock, TelemetryBlock

SESSIONS_DB = "out/chat-sessions.sqlite"
NEW_SESSION = "+new"   # the key of the sessions list's first row


class ChatMessage(Markdown):
    """One turn in the transcript; the class names the role for styling."""

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(text, classes=f"msg {role}")
        self.role = role


class ToolCallBlock(Collapsible):
    """server.tool with its arguments; the result and duration fill in when the call returns."""

    def __init__(self, name: str, args: dict) -> None:
        self.body = Static(f"arguments: {json.dumps(args, ensure_ascii=False)}")
        super().__init__(self.body, title=f"⚙ {name}", collapsed=False, classes="tool-call")
        self.tool_name, self.args = name, args

    def finish(self, event: ToolResult) -> None:
        if event.denied:
            self.title = f"✗ {self.tool_name} (denied)"
        else:
            mark = "✗" if event.is_error else "✓"
            self.title = f"{mark} {self.tool_name} ({event.duration_s:.2f}s)"
        self.body.update(f"arguments: {json.dumps(self.args, ensure_ascii=False)}\nresult: {event.text[:2000]}")


class AgentHost:
    """Owns the MCP servers and the chat session for the app's lifetime (one task enters and leaves them)."""

    def __init__(self, services, session_id: str | None = None) -> None:
        self.services = services
        self.session_id = session_id   # a session to resume, or None for a new one
        self.session = None
        self.mcp = None
        self.tools: list = []
        self.ready = asyncio.Event()
        self.closing = asyncio.Event()
        self.error: Exception | None = None

    async def run(self, approve) -> None:
        from agents.tools.configuration import Configuration
        from agents.tools.session import ToolSession
        from mcp_client import MCPManager

        s = self.services.settings
        try:
            model = await asyncio.to_thread(self.services.chat_model)   # loading the engine blocks: a thread
            async with MCPManager(s.mcp_config or {}) as mcp:
                self.mcp = mcp
                self.tools = await mcp.list_tools()
                async with ToolSession(model=model, mcp=mcp, db_path=SESSIONS_DB, approve=approve,
                                       settings=Configuration(approve=s.approve, max_tokens=s.max_tokens,
                                                              tool_choice=s.tool_choice,
                                                              reasoning=None if s.think == "none" else s.think),
                                       model_name=s.model, session_id=self.session_id,
                                       resume=bool(self.session_id)) as session:
                    self.session = session
                    self.ready.set()
                    await self.closing.wait()
        except Exception as exc:  # reported by the turn that waits on `ready`
            self.error = exc
            self.ready.set()


def server_label(status) -> str:
    state = "restarting" if status.state == "starting" and status.restarts else status.state
    mark = {"ready": "●", "starting": "◌", "restarting": "◌"}.get(state, "✗")
    return f"{mark} {status.name}: {state} ({status.tools} tools)"


class AssistantPane(Horizontal):
    """Transcript + prompt on the left, MCP servers and the session on the right. Escape stops the turn."""

    def __init__(self, services, **kwargs) -> None:
        super().__init__(**kwargs)
        self.services = services
        self.host: AgentHost | None = None
        self._host_worker = None
        self.session_id: str | None = None   # picked before the host started: it resumes this one
        self._server_states: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="chat-column"):
            yield VerticalScroll(id="transcript")
            yield Static("", id="assistant-status")
            yield Input(placeholder="Ask something… (Enter to send, Esc to stop)", id="prompt")
        with Vertical(id="servers-panel"):
            yield Static("MCP servers", classes="panel-title")
            servers: Tree[None] = Tree("servers", id="servers")
            servers.show_root = False
            yield servers
            yield Static("session: new", id="session-id")

    def on_mount(self) -> None:
        self.query_one("#servers", Tree).root.add_leaf("start with the first question")
        # Server states change on their own (a crash, a restart): poll the manager's snapshot, which is cheap.
        self.set_interval(1.0, self.watch_servers)

    @on(Input.Submitted, "#prompt")
    async def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        event.input.value = ""
        transcript = self.query_one("#transcript", VerticalScroll)
        await transcript.mount(ChatMessage("user", text))
        transcript.scroll_end(animate=False)
        self.turn(text)

    async def _host(self) -> AgentHost:
        if self.host is None:
            self.host = AgentHost(self.services, self.session_id)
            self._host_worker = self.run_host(self.host)
        await self.host.ready.wait()
        if self.host.error is not None:
            error, self.host = self.host.error, None
            raise error
        return self.host

    @work(group="agent-host")
    async def run_host(self, host: AgentHost) -> None:
        await host.run(self.approve)

    async def approve(self, tool: str, arguments: dict) -> bool:
        """The approval callback of the tool graph: a modal, answered by the user."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def settle(ok: bool) -> None:
            if not answer.done():   # the turn may have been cancelled (Esc) while the modal was open
                answer.set_result(ok)

        self.app.push_screen(ApprovalScreen(tool, arguments), callback=settle)
        return await answer

    @work(exclusive=True, group="assistant")
    async def turn(self, text: str) -> None:
        transcript = self.query_one("#transcript", VerticalScroll)
        reply: ChatMessage | None = None
        thoughts: ReasoningBlock | None = None
        blocks: dict[str, ToolCallBlock] = {}
        meter = RateMeter()
        self._status("starting model and MCP servers…")
        try:
            host = await self._host()
            self._show_session(host.session.session_id)
            host.tools = await host.mcp.list_tools()   # restarts a crashed server; the panel shows what is there
            self.watch_servers()
            self._status("generating…")
            async for event in host.session.ask(text):
                match event:
                    case AnswerToken(text=piece):
                        if reply is None:
                            reply = ChatMessage("assistant")
                            await transcript.mount(reply)
                        await reply.append(piece)
                        rate = meter.tick()
                        if rate:
                            self.post_message(rate)
                    case ReasoningToken(text=piece):
                        if thoughts is None:
                            thoughts = ReasoningBlock()
                            await transcript.mount(thoughts)
                        thoughts.append(piece)
                    case ToolCall():
                        reply = thoughts = None   # text after the tools goes into new blocks below them
                        blocks[event.id] = ToolCallBlock(event.name, event.args)
                        await transcript.mount(blocks[event.id])
                    case ToolResult() if event.id in blocks:
                        blocks[event.id].finish(event)
                        self.watch_servers()
                    case InvalidCall():
                        self.app.notify("the model's tool call was malformed; it was told why", severity="warning")
                    case Answer():
                        if reply is None:
                            await transcript.mount(ChatMessage("assistant", event.text))
                        if event.telemetry.get("steps"):
                            await transcript.mount(TelemetryBlock(event.telemetry))
                transcript.scroll_end(animate=False)
            self.post_message(meter.final())
            self._status("")
        except asyncio.CancelledError:
            if reply is not None:
                await reply.append("\n\n*(stopped)*")
            self._status("stopped")
            raise
        except Exception as exc:  # a failing backend or server must not take the app down
            self._status("")
            self.app.notify(f"backend error: {exc}", severity="error", timeout=10)
            await transcript.mount(ChatMessage("error", f"*error: {exc}*"))

    def watch_servers(self) -> None:
        """Redraw the servers panel when a state changed; a server that crashed or failed is notified."""
        if self.host is None or self.host.mcp is None:
            return
        statuses = self.host.mcp.servers()
        states = {st.name: server_label(st) for st in statuses}
        if states == self._server_states:
            return
        for st in statuses:
            if st.state in ("crashed", "failed") and self._server_states.get(st.name) != states[st.name]:
                self.app.notify(f"MCP server {st.name} {st.state}: {st.error}", severity="error", timeout=10)
        self._server_states = states
        tree = self.query_one("#servers", Tree)
        tree.clear()
        for st in statuses:
            node = tree.root.add(states[st.name], expand=True)
            for tool in self.host.tools:
                if tool.server == st.name:
                    node.add_leaf(tool.tool)
        if not statuses:
            tree.root.add_leaf("none configured (Settings, F4)")

    # ---- sessions -------------------------------------------------------------------------------------
    def pick_session(self) -> None:
        """The sessions of the transcript database; the picked one continues (or a new one starts)."""
        from tui.screens.pick import PickScreen
        from tui.services import chat_sessions

        try:
            sessions = chat_sessions(SESSIONS_DB)
        except Exception as exc:  # a damaged database must not take the app down
            self.app.notify(f"cannot read {SESSIONS_DB}: {exc}", severity="error")
            return
        from datetime import datetime

        rows = [(NEW_SESSION, ("+ new session", "", "", ""))]
        rows += [(s["id"], (s["id"], datetime.fromtimestamp(s["updated"]).strftime("%Y-%m-%d %H:%M"),
                            s["model"] or "-", (s["title"] or "(empty)")[:50])) for s in sessions]
        self.app.push_screen(PickScreen("Chat sessions", ("session", "last update", "model", "first question"),
                                        rows, ""), self.open_session)

    async def open_session(self, session_id: str | None) -> None:
        """Show a session's history and make it the one the next question goes to."""
        if not session_id:
            return
        if any(w.group == "assistant" and w.is_running for w in self.workers):
            self.app.notify("a turn is running: wait for it or press Esc first", severity="warning")
            return
        transcript = self.query_one("#transcript", VerticalScroll)
        if session_id == NEW_SESSION:
            await transcript.remove_children()
            if self.host is not None and self.host.session is not None:
                self._show_session(self.host.session.reset())
            else:
                self.session_id = None
                self._show_session(None)
            return
        from tui.services import chat_events

        try:
            events = chat_events(SESSIONS_DB, session_id)
        except Exception as exc:
            self.app.notify(str(exc), severity="error")
            return
        await transcript.remove_children()
        await self.show_history(events)
        if self.host is not None and self.host.session is not None:
            # The graph's checkpoint is keyed by the session id: the next question continues that thread.
            self.host.session.session_id = session_id
        else:
            self.session_id = session_id
        self._show_session(session_id)
        self.app.notify(f"resumed session {session_id}")

    async def show_history(self, events: list[ChatEvent]) -> None:
        """Render recorded events as a live turn would have shown them."""
        transcript = self.query_one("#transcript", VerticalScroll)
        blocks: dict[str, ToolCallBlock] = {}
        for event in events:
            match event:
                case Question(text=text):
                    await transcript.mount(ChatMessage("user", text))
                case ToolCall():
                    blocks[event.id] = ToolCallBlock(event.name, event.args)
                    await transcript.mount(blocks[event.id])
                case ToolResult() if event.id in blocks:
                    blocks[event.id].finish(event)
                case Answer(text=text) if text:
                    await transcript.mount(ChatMessage("assistant", text))
        transcript.scroll_end(animate=False)

    def _show_session(self, session_id: str | None) -> None:
        self.query_one("#session-id", Static).update(f"session: {session_id or 'new'}")

    def _status(self, text: str) -> None:
        self.query_one("#assistant-status", Static).update(text)

    def cancel(self) -> bool:
        """Cancel the running turn; True when there was one."""
        return cancel_workers(self, "assistant")

    def settings_changed(self) -> None:
        """New settings (model, MCP config, approval): the next question starts a new host with them and
        continues the current session."""
        if self.host is None:
            return
        self.cancel()
        if self.host.session is not None:
            self.session_id = self.host.session.session_id
        self.host.closing.set()
        self.host, self._server_states = None, {}
        tree = self.query_one("#servers", Tree)
        tree.clear()
        tree.root.add_leaf("restart with the next question")

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Close the session and stop the MCP servers, and wait (up to `timeout` s) until they are: quitting then
        leaves no SQLite connection or server process behind a closed event loop."""
        if self._host_worker is None:  # (after new settings it is the old host's, still closing)
            return
        self.cancel()
        if self.host is not None:
            self.host.closing.set()
        try:
            await asyncio.wait_for(self._host_worker.wait(), timeout)
        except Exception:  # noqa: BLE001 - a host that failed or hangs must not keep the app from quitting
            pass

    def on_unmount(self) -> None:
        """Stop the MCP servers and close the session when the app quits."""
        if self.host is not None:
            self.host.closing.set()
