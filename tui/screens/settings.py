"""Edit the TUI settings (model, backend, URL, index, MCP config, approval policy); returns new settings or None."""
from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from tui.settings import TuiSettings

FIELDS = (("model", "Model", "model alias or path"), ("base_url", "Backend URL", "for the openai backend"),
          ("index_dir", "Index directory", "paper index for Survey mode"),
          ("mcp_config", "MCP config file", "MCP servers for Assistant mode"),
          ("approve", "Approval", "always | never | allow list server.tool,..."),
          ("tool_choice", "Tool choice", "auto | required (the first reply must call a tool)"),
          ("think", "Reasoning", "none | think (<think>) | thought (MiniCPM4-MCP): reasons before each reply"))


class SettingsScreen(ModalScreen[TuiSettings | None]):
    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, settings: TuiSettings) -> None:
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        with Vertical(id="settings"):
            yield Label("Settings", id="settings-title")
            yield Label("Backend")
            yield Select([("in-process engine", "engine"), ("OpenAI-compatible server", "openai")],
                         value=self.settings.backend, allow_blank=False, id="backend")
            for name, label, hint in FIELDS:
                with Horizontal(classes="setting-row"):
                    yield Label(label, classes="setting-label")
                    yield Input(value=getattr(self.settings, name) or "", placeholder=hint, tooltip=hint, id=name)
            with Horizontal(id="settings-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
            return
        values = {name: (self.query_one(f"#{name}", Input).value.strip() or None) for name, _, _ in FIELDS}
        values["approve"] = values["approve"] or "always"
        values["tool_choice"] = values["tool_choice"] or "auto"
        values["think"] = values["think"] or "none"
        if values["think"] not in ("none", "think", "thought"):
            self.app.notify("reasoning must be none, think or thought", severity="error")
            return
        values["model"] = values["model"] or self.settings.model
        self.dismiss(replace(self.settings, backend=self.query_one("#backend", Select).value, **values))

    def action_cancel(self) -> None:
        self.dismiss(None)
