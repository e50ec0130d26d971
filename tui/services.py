"""What the TUI talks to — the chat model, the paper index, the MCP servers — created lazily, off the UI thread.

Loading the engine takes seconds, so nothing here runs at app start: the first worker that needs a model
builds it (under a lock, once) and later workers reuse it.
"""
from __future__ import annotations

import threading
from typing import Any

from tui.settings import TuiSettings


class Services:
    def __init__(self, settings: TuiSettings, chat_model: Any | None = None) -> None:
        self.settings = settings
        self._chat_model = chat_model
        self._lock = threading.Lock()

    def chat_model(self):
        """The langchain chat model for the current settings (built on first use; blocking: call from a worker)."""
        with self._lock:
            if self._chat_model is None:
                from agents.chat import make_chat_model

                s = self.settings
                self._chat_model = make_chat_model(backend=s.backend, model=s.model, base_url=s.base_url)
            return self._chat_model

    def reconfigure(self, settings: TuiSettings) -> None:
        """New settings: drop what depends on the old ones so the next use rebuilds it."""
        with self._lock:
            if (settings.backend, settings.model, settings.base_url) != (
                self.settings.backend, self.settings.model, self.settings.base_url):
                self._chat_model = None
            self.settings = settings

    def describe(self) -> str:
        s = self.settings
        where = s.base_url if s.backend == "openai" else "in-process"
        return f"{s.model} · {s.backend} ({where})"
