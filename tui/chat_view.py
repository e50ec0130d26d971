"""How `cpm chat` shows a session in the terminal: streamed answer text, tool calls with their arguments,
approval questions, results (errors in red), server states. It renders the events of agents.tools.session."""
from __future__ import annotations

import asyncio
import json
import sys

from agents.events import Answer, AnswerToken, Approval, ChatEvent, InvalidCall, ToolCall, ToolResult

RESULT_PREVIEW = 400   # characters of a tool result shown inline; the model sees the whole (truncated) text


class ChatView:
    def __init__(self, quiet: bool = False):
        from rich.console import Console

        # quiet (--json): the JSON on stdout is the only output, so progress goes to stderr.
        self.console = Console(stderr=quiet, highlight=False)
        self.quiet = quiet
        self._in_answer = False

    def note(self, text: str) -> None:
        self._end_answer()
        self.console.print(text, style="dim", markup=False)

    def banner(self, session_id: str, settings, n_tools: int) -> None:
        from agents.tools.approval import ApprovalPolicy

        self.console.print(f"session {session_id} (resume with --session {session_id}); {n_tools} tools; "
                           f"{ApprovalPolicy.parse(settings.approve).describe()}. /help for commands.",
                           style="dim", markup=False)

    def servers(self, statuses, warn_only: bool = False) -> None:
        for s in statuses:
            if s.state == "ready" and not warn_only:
                self.console.print(f"  {s.name}: ready, {s.tools} tools ({s.where})", markup=False)
            elif s.state != "ready":
                self.console.print(f"  {s.name}: {s.state}: {s.error}", style="red", markup=False)
        if not statuses and not warn_only:
            self.note("no MCP servers configured (pass --mcp FILE)")

    def tools(self, specs) -> None:
        for t in specs:
            first = (t.description or "").strip().split("\n")[0]
            self.console.print(f"  {t.name}  {first}", markup=False)
        if not specs:
            self.note("no tools (is a server failing? try /servers)")

    def history(self, messages) -> None:
        for m in messages[-6:]:
            kind = type(m).__name__.replace("Message", "").lower()
            if isinstance(m.content, str) and m.content:
                self.console.print(f"[{kind}] {m.content[:200]}", style="dim", markup=False)

    def event(self, event: ChatEvent) -> None:
        match event:
            case AnswerToken(text=text) if not self.quiet:
                if not self._in_answer:
                    self.console.print("assistant> ", end="", style="bold", markup=False)
                    self._in_answer = True
                self.console.print(text, end="", markup=False)
            case ToolCall(name=name, args=args):
                self._end_answer()
                self.console.print(f"→ {name} {json.dumps(args, ensure_ascii=False)}", style="cyan", markup=False)
            case Approval(name=name, approved=False):
                self.console.print(f"  {name} not approved: not run", style="yellow", markup=False)
            case ToolResult():
                text = event.text if len(event.text) <= RESULT_PREVIEW else event.text[:RESULT_PREVIEW] + " …"
                self.console.print(f"← {event.name} ({event.duration_s:.2f}s): {text}",
                                   style="red" if event.is_error else "green", markup=False)
            case InvalidCall(error=error):
                self._end_answer()
                self.console.print(error, style="yellow", markup=False)
            case Answer() if not self.quiet:
                if not self._in_answer and event.text:
                    self.console.print("assistant> " + event.text, markup=False, end="")
                    self._in_answer = True
                self._end_answer()
                if event.stopped == "step_limit":
                    self.note(f"(stopped at the step limit: {event.steps} model calls)")

    def _end_answer(self) -> None:
        if self._in_answer:
            self.console.print()
            self._in_answer = False

    async def ask_approval(self, tool: str, arguments: dict) -> bool:
        """The approval callback: y/N on the terminal; anything but yes (or end of input) is no."""
        self._end_answer()
        question = f"run {tool} {json.dumps(arguments, ensure_ascii=False)}? [y/N] "
        try:
            answer = await asyncio.to_thread(input, question)
        except EOFError:
            print(file=sys.stderr)
            return False
        return answer.strip().lower() in ("y", "yes")
