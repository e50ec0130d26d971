"""Ask the user whether a tool call may run: returns True (approve) or False (deny)."""
from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ApprovalScreen(ModalScreen[bool]):
    BINDINGS = [("y", "approve", "Approve"), ("n,escape", "deny", "Deny")]

    def __init__(self, tool_name: str, arguments: dict) -> None:
        super().__init__()
        self.tool_name = tool_name
        self.arguments = arguments

    def compose(self) -> ComposeResult:
        with Vertical(id="approval"):
            yield Label(f"Run tool [b]{self.tool_name}[/b]?", id="approval-title")
            yield Static(json.dumps(self.arguments, indent=2, ensure_ascii=False), id="approval-args")
            with Horizontal(id="approval-buttons"):
                yield Button("Approve (y)", variant="success", id="approve")
                yield Button("Deny (n)", variant="error", id="deny")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "approve")

    def action_approve(self) -> None:
        self.dismiss(True)

    def action_deny(self) -> None:
        self.dismiss(False)
