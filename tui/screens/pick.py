"""Pick one row of a table (a survey to resume, a chat session, a saved survey): returns its key, or None."""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label


class PickScreen(ModalScreen[str | None]):
    BINDINGS = [("escape", "dismiss(None)", "Close")]

    def __init__(self, title: str, columns: tuple[str, ...], rows: list[tuple[str, tuple]], empty: str) -> None:
        """rows: (key, cells) pairs; `empty` says what to do when there is nothing to pick."""
        super().__init__()
        self.title_text, self.columns, self.rows, self.empty = title, columns, rows, empty

    def compose(self) -> ComposeResult:
        with Vertical(id="pick"):
            yield Label(f"[b]{self.title_text}[/b]  (Enter picks, Esc closes)", id="pick-title")
            if self.rows:
                yield DataTable(id="pick-table", cursor_type="row", zebra_stripes=True)
            else:
                yield Label(self.empty, id="pick-empty")

    def on_mount(self) -> None:
        if self.rows:
            table = self.query_one(DataTable)
            table.add_columns(*self.columns)
            for key, cells in self.rows:
                table.add_row(*(str(c) for c in cells), key=key)
            table.focus()

    @on(DataTable.RowSelected, "#pick-table")
    def picked(self, event: DataTable.RowSelected) -> None:
        self.dismiss(event.row_key.value)
