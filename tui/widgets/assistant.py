"""Assistant mode: a chat with streaming Markdown replies; model work runs in a thread worker."""
from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Markdown, Static
from textual.worker import get_current_worker


class ChatMessage(Markdown):
    """One turn in the transcript; the class names the role for styling."""

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(text, classes=f"msg {role}")
        self.role = role


class AssistantPane(Vertical):
    """Transcript + prompt. Escape (the app's cancel action) stops the running generation."""

    class Stats(Message):
        """Posted after a reply so the app header can show tokens/s."""

        def __init__(self, tokens: int, seconds: float) -> None:
            super().__init__()
            self.tokens, self.seconds = tokens, seconds

    def __init__(self, services, **kwargs) -> None:
        super().__init__(**kwargs)
        self.services = services
        self.history: list = []

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="transcript")
        yield Static("", id="assistant-status")
        yield Input(placeholder="Ask something… (Enter to send, Esc to stop)", id="prompt")

    @on(Input.Submitted, "#prompt")
    async def send(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        event.input.value = ""
        transcript = self.query_one("#transcript", VerticalScroll)
        await transcript.mount(ChatMessage("user", text))
        reply = ChatMessage("assistant")
        await transcript.mount(reply)
        transcript.scroll_end(animate=False)
        self.respond(text, reply)

    @work(thread=True, exclusive=True, group="assistant")
    def respond(self, text: str, reply: ChatMessage) -> None:
        """Stream the model's answer into `reply`; on cancel, keep what arrived and mark it stopped."""
        from langchain_core.messages import AIMessage, HumanMessage

        worker = get_current_worker()
        self.app.call_from_thread(self._status, "loading model…")
        try:
            model = self.services.chat_model()
            self.history.append(HumanMessage(text))
            self.app.call_from_thread(self._status, "generating…")
            parts: list[str] = []
            start, n_chunks = time.perf_counter(), 0
            for chunk in model.stream(self.history):
                if worker.is_cancelled:
                    break
                if chunk.content:
                    parts.append(str(chunk.content))
                    n_chunks += 1
                    self.app.call_from_thread(reply.append, str(chunk.content))
            answer = "".join(parts)
            self.history.append(AIMessage(answer))
            if worker.is_cancelled:
                self.app.call_from_thread(reply.append, "\n\n*(stopped)*")
            self.app.call_from_thread(self.post_message, self.Stats(n_chunks, time.perf_counter() - start))
            self.app.call_from_thread(self._status, "")
        except Exception as exc:  # a failing backend must not take the app down: show it and go on
            self.app.call_from_thread(self._status, "")
            self.app.call_from_thread(self.app.notify, f"backend error: {exc}", severity="error", timeout=10)
            self.app.call_from_thread(reply.update, f"*error: {exc}*")

    def _status(self, text: str) -> None:
        self.query_one("#assistant-status", Static).update(text)

    def cancel(self) -> bool:
        """Cancel a running generation; True when there was one."""
        running = any(w.group == "assistant" and w.is_running for w in self.workers)
        self.workers.cancel_group(self, "assistant")
        return running
