"""Show one retrieved paper: title, authors, year, id and its abstract/chunk text."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown


class DocumentScreen(ModalScreen[None]):
    BINDINGS = [("escape,q", "dismiss", "Close")]

    def __init__(self, source: dict) -> None:
        super().__init__()
        self.source = source

    def compose(self) -> ComposeResult:
        s = self.source
        with VerticalScroll(id="document"):
            yield Markdown(f"# {s.get('title', '')}\n\n*{s.get('authors', '')}* ({s.get('year') or '?'}) — "
                           f"`{s.get('id', '')}`\n\n{s.get('text', '')}")
