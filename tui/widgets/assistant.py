"""Assistant mode: chat with streaming Markdown, MCP tool calls as collapsible blocks, approvals, servers panel.

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
from textual.message import Message
from textual.widgets import Collapsible, DataTable, Input, Markdown, Static

from tui.screens.approval import ApprovalScreen
from tui.widgets import cancel_workers

SESSIONS_DB = "out/chat-sessions.sqlite"


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

    def finish(self, event: dict) -> None:
        if event.get("denied"):
            self.title = f"✗ {self.tool_name} (denied)"
        else:
            mark = "✗" if event.get("is_error") else "✓"
            self.title = f"{mark} {self.tool_name} ({event.get('duration_s', 0):.2f}s)"
        text = str(event.get("text", ""))
        self.body.update(f"arguments: {json.dumps(self.args, ensure_ascii=False)}\nresult: {text[:2000]}")


class AgentHost:
    """Owns the MCP servers and the chat session for the app's lifetime (one task enters and leaves them)."""

    def __init__(self, services) -> None:
        self.services = services
        self.session = None
        self.mcp = None
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
                async with ToolSession(model=model, mcp=mcp, db_path=SESSIONS_DB, approve=approve,
                                       settings=Configuration(approve=s.approve, max_tokens=s.max_tokens,
                                                              tool_choice=s.tool_choice),
                                       model_name=s.model) as session:
                    self.session = session
                    self.ready.set()
                    await self.closing.wait()
        except Exception as exc:  # reported by the turn that waits on `ready`
            self.error = exc
            self.ready.set()


class AssistantPane(Horizontal):
    """Transcript + prompt on the left, MCP servers on the right. Escape stops the running turn."""

    class Stats(Message):
        """Posted after a reply so the app header can show tokens/s."""

        def __init__(self, tokens: int, seconds: float) -> None:
            super().__init__()
            self.tokens, self.seconds = tokens, seconds

    def __init__(self, services, **kwargs) -> None:
        super().__init__(**kwargs)
        self.services = services
        self.host: AgentHost | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="chat-column"):
            yield VerticalScroll(id="transcript")
            yield Static("", id="assistant-status")
            yield Input(placeholder="Ask something… (Enter to send, Esc to stop)", id="prompt")
        with Vertical(id="servers-panel"):
            yield Static("MCP servers", classes="panel-title")
            yield DataTable(id="servers", cursor_type="row", show_cursor=False)

    def on_mount(self) -> None:
        self.query_one("#servers", DataTable).add_columns("server", "state", "tools")

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
            self.host = AgentHost(self.services)
            self.run_host(self.host)
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
        blocks: dict[str, ToolCallBlock] = {}
        tokens, loop = 0, asyncio.get_running_loop()
        start = loop.time()
        self._status("starting model and MCP servers…")
        try:
            host = await self._host()
            self._show_servers(host.mcp)
            self._status("generating…")
            async for event in host.session.ask(text):
                kind = event["event"]
                if kind == "token":
                    if reply is None:
                        reply = ChatMessage("assistant")
                        await transcript.mount(reply)
                    tokens += 1
                    await reply.append(event["text"])
                elif kind == "tool_call":
                    reply = None   # text after the tools goes into a new message below them
                    blocks[event["id"]] = ToolCallBlock(event["name"], event["args"])
                    await transcript.mount(blocks[event["id"]])
                elif kind == "tool_result" and event["id"] in blocks:
                    blocks[event["id"]].finish(event)
                    self._show_servers(host.mcp)
                elif kind == "invalid_call":
                    self.app.notify("the model's tool call was malformed; it was told why", severity="warning")
                elif kind == "answer" and reply is None:
                    await transcript.mount(ChatMessage("assistant", event["text"]))
                transcript.scroll_end(animate=False)
            self.post_message(self.Stats(tokens, loop.time() - start))
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

    def _show_servers(self, mcp) -> None:
        table = self.query_one("#servers", DataTable)
        table.clear()
        for status in mcp.servers():
            table.add_row(status.name, status.state, str(status.tools))

    def _status(self, text: str) -> None:
        self.query_one("#assistant-status", Static).update(text)

    def cancel(self) -> bool:
        """Cancel the running turn; True when there was one."""
        return cancel_workers(self, "assistant")

    def on_unmount(self) -> None:
        """Stop the MCP servers and close the session when the app quits."""
        if self.host is not None:
            self.host.closing.set()
