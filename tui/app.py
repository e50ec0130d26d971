"""The cpm Textual app: Survey and Assistant modes, settings, themes, command palette; model work never
blocks the UI (it runs in workers), and Esc stops it."""
from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, TabbedContent, TabPane

from tui.screens.settings import SettingsScreen
from tui.services import Services
from tui.settings import TuiSettings
from tui.widgets import TokenRate
from tui.widgets.assistant import AssistantPane
from tui.widgets.survey import SurveyPane


class CpmApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "cpm"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="quit"),
        Binding("f2", "mode('survey')", "Survey", id="mode-survey"),
        Binding("f3", "mode('assistant')", "Assistant", id="mode-assistant"),
        Binding("f4", "settings", "Settings", id="settings"),
        Binding("f5", "toggle_theme", "Theme", id="theme"),
        Binding("f6", "resume", "Resume", id="resume"),
        Binding("f7", "factscore", "FactScore", id="factscore"),
        Binding("ctrl+s", "save", "Save", id="save"),
        Binding("escape", "cancel", "Stop", id="cancel"),
    ]

    def __init__(self, settings: TuiSettings | None = None, services: Services | None = None,
                 mode: str = "assistant") -> None:
        super().__init__()
        self.settings = settings or TuiSettings.from_env()
        self.services = services or Services(self.settings)
        self.initial_mode = mode  # "survey" | "assistant": `cpm tui --index DIR` opens in Survey mode

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial=self.initial_mode, id="modes"):
            with TabPane("Survey", id="survey"):
                yield SurveyPane(self.services, id="survey-pane")
            with TabPane("Assistant", id="assistant"):
                yield AssistantPane(self.services, id="assistant-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.services.describe()
        if self.initial_mode == "survey":
            self.query_one("#topic").focus()

    @property
    def mode(self) -> str:
        return self.query_one("#modes", TabbedContent).active

    def action_mode(self, mode: str) -> None:
        # Focus follows the mode: TabbedContent re-activates whichever pane holds the focused widget.
        self.query_one("#modes", TabbedContent).active = mode
        self.query_one("#topic" if mode == "survey" else "#prompt").focus()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_cancel(self) -> None:
        stopped = self.query_one(AssistantPane).cancel()
        stopped = self.query_one(SurveyPane).cancel() or stopped
        if stopped:
            self.notify("stopped")
            self.sub_title = self.sub_title.replace(" (generating)", "")

    def action_resume(self) -> None:
        """Survey mode: the interrupted surveys; Assistant mode: the chat sessions."""
        if self.mode == "survey":
            self.query_one(SurveyPane).pick_resume()
        else:
            self.query_one(AssistantPane).pick_session()

    def action_factscore(self) -> None:
        self.action_mode("survey")
        self.query_one(SurveyPane).factscore()

    async def action_quit(self) -> None:
        """Quit after the assistant's session and MCP servers have closed (a bare exit would leave them to be torn
        down after the event loop is gone)."""
        await self.query_one(AssistantPane).shutdown()
        self.exit()

    def action_save(self) -> None:
        self.query_one(SurveyPane).save()

    def action_settings(self) -> None:
        def apply(new: TuiSettings | None) -> None:
            if new is not None:
                self.settings = new
                self.services.reconfigure(new)
                self.query_one(AssistantPane).settings_changed()
                self.sub_title = self.services.describe()
                self.notify("settings saved")

        self.push_screen(SettingsScreen(self.settings), apply)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p): Textual's own commands and every action of the app."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Survey mode", "Write a survey from a paper index (F2)", lambda: self.action_mode("survey"))
        yield SystemCommand("Assistant mode", "Chat with MCP tools (F3)", lambda: self.action_mode("assistant"))
        yield SystemCommand("Settings", "Model, backend URL, index, MCP config, approval policy (F4)",
                            self.action_settings)
        yield SystemCommand("Toggle dark/light theme", "Switch between textual-dark and textual-light (F5)",
                            self.action_toggle_theme)
        yield SystemCommand("Resume survey", "Continue an interrupted survey from the checkpoint database",
                            self.query_one(SurveyPane).pick_resume)
        yield SystemCommand("Save / export survey", "Markdown, BibTeX and trace under out/surveys (ctrl+s)",
                            self.action_save)
        yield SystemCommand("FactScore", "Score the finished or a saved survey (F7)", self.action_factscore)
        yield SystemCommand("Chat sessions", "Resume a chat session or start a new one",
                            self.query_one(AssistantPane).pick_session)
        yield SystemCommand("Stop generation", "Cancel the running survey or chat turn (Esc)", self.action_cancel)

    @on(TokenRate)
    def show_speed(self, event: TokenRate) -> None:
        if not event.done and not any(w.group in ("survey", "assistant") and w.is_running for w in self.workers):
            return  # a rate posted just before Esc, read after it: nothing is generating any more
        state = "" if event.done else " (generating)"
        self.sub_title = f"{self.services.describe()} · {event.rate:.1f} tok/s{state}"
