"""Modal screens mounted in a small host app and driven by the pilot."""
from textual.app import App

from agents.tools.approval import ApprovalPolicy

from tui.screens.approval import ApprovalScreen
from tui.screens.settings import SettingsScreen
from tui.settings import TuiSettings


class Host(App):
    def __init__(self, screen) -> None:
        super().__init__()
        self.screen_under_test = screen
        self.result = "unset"

    def on_mount(self) -> None:
        self.push_screen(self.screen_under_test, self.record)

    def record(self, value) -> None:
        self.result = value


async def test_approval_approve_and_deny_by_key():
    for key, expected in (("y", True), ("n", False), ("escape", False)):
        app = Host(ApprovalScreen("sqlite.write_query", {"query": "DELETE FROM t"}))
        async with app.run_test() as pilot:
            await pilot.press(key)
            await pilot.pause()
        assert app.result is expected


async def test_settings_save_returns_new_settings():
    app = Host(SettingsScreen(TuiSettings()))
    async with app.run_test(size=(100, 50)) as pilot:
        pilot.app.screen.query_one("#index_dir").value = "/tmp/idx"
        pilot.app.screen.query_one("#approve").value = "time.get_current_time"
        await pilot.click("#save")
        await pilot.pause()
    assert app.result.index_dir == "/tmp/idx"
    assert app.result.approve == "time.get_current_time"
    policy = ApprovalPolicy.parse(app.result.approve)
    assert not policy.needs_approval("time.get_current_time")
    assert policy.needs_approval("sqlite.write_query")


async def test_settings_cancel_returns_none():
    app = Host(SettingsScreen(TuiSettings()))
    async with app.run_test(size=(100, 50)) as pilot:
        await pilot.press("escape")
        await pilot.pause()
    assert app.result is None
