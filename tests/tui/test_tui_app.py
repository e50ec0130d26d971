"""The whole app under `run_test()`: modes, bindings, settings, and clean errors without a backend."""
from textual.widgets import TabbedContent

from tui.app import CpmApp
from tui.services import Services
from tui.settings import TuiSettings


async def test_mode_switch_and_theme_toggle():
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        assert app.query_one("#modes", TabbedContent).active == "assistant"
        await pilot.press("f2")
        assert app.query_one("#modes", TabbedContent).active == "survey"
        await pilot.press("f3")
        assert app.query_one("#modes", TabbedContent).active == "assistant"
        before = app.theme
        await pilot.press("f5")
        assert app.theme != before


async def test_failing_backend_shows_error_and_app_keeps_running():
    # A server nobody listens on: the backend fails for real, the UI must say so and stay usable.
    settings = TuiSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="none")
    app = CpmApp(settings, Services(settings))
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.click("#prompt")
        await pilot.press(*"hello", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("backend error" in str(n.message) for n in app._notifications)
        await pilot.press("f2")
        await pilot.pause()
        assert app.query_one("#modes", TabbedContent).active == "survey"


async def test_survey_without_index_explains_what_to_do():
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f2")
        app.query_one("#topic").value = "speculative decoding"
        await pilot.click("#write")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("no index directory" in str(n.message) for n in app._notifications)
