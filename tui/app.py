"""The cpm Textual app: Survey and Assistant modes, settings, themes; model work never blocks the UI."""
from __future__ import annotations

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent, TabPane

from tui.screens.settings import SettingsScreen
from tui.services import Services
from tui.settings import TuiSettings
from tui.widgets.assistant import AssistantPane


class CpmApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "cpm"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="quit"),
        Binding("f2", "mode('survey')", "Survey", id="mode-survey"),
        Binding("f3", "mode('assistant')", "Assistant", id="mode-assistant"),
        Binding("f4", "settings", "Settings", id="settings"),
        Binding("f5", "toggle_theme", "Theme", id="theme"),
        Binding("escape", "cancel", "Stop", id="cancel"),
    ]

    def __init__(self, settings: TuiSettings | None = None, services: Services | None = None) -> None:
        super().__init__()
        self.settings = settings or TuiSettings.from_env()
        self.services = services or Services(self.settings)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="assistant", id="modes"):
            with TabPane("Survey", id="survey"):
                from tui.widgets.survey import SurveyPane

                yield SurveyPane(self.services, id="survey-pane")
            with TabPane("Assistant", id="assistant"):
                yield AssistantPane(self.services, id="assistant-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.services.describe()

    def action_mode(self, mode: str) -> None:
        # Focus follows the mode: TabbedContent re-activates whichever pane holds the focused widget.
        self.query_one("#modes", TabbedContent).active = mode
        self.query_one("#topic" if mode == "survey" else "#prompt").focus()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_cancel(self) -> None:
        stopped = self.query_one(AssistantPane).cancel()
        from tui.widgets.survey import SurveyPane

        stopped = self.query_one(SurveyPane).cancel() or stopped
        if stopped:
            self.notify("stopped")

    def action_settings(self) -> None:
        def apply(new: TuiSettings | None) -> None:
            if new is not None:
                self.settings = new
                self.services.reconfigure(new)
                self.sub_title = self.services.describe()
                self.notify("settings saved")

        self.push_screen(SettingsScreen(self.settings), apply)

    @on(AssistantPane.Stats)
    def show_speed(self, event: AssistantPane.Stats) -> None:
        rate = event.tokens / event.seconds if event.seconds > 0 else 0.0
        self.sub_title = f"{self.services.describe()} · {rate:.1f} tok/s"
