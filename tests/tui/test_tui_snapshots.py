"""Snapshot tests (pytest-textual-snapshot) of the main screens; update with --snapshot-update."""
from pathlib import Path

from textual.widgets import Input, TextArea

from tui.app import CpmApp
from tui.settings import TuiSettings

SIZE = (140, 40)


def steady(*keys: str, then=None):
    """Press `keys` (and run `then`), then hold every text cursor visible. A focused Input blinks every 0.5 s,
    so on a loaded CI machine the screenshot landed on the hidden phase once; it must not depend on timing."""
    async def run_before(pilot) -> None:
        await pilot.press(*keys)
        if then is not None:
            await then(pilot)
        await pilot.pause()
        for widget in pilot.app.screen.query("Input, TextArea"):
            if isinstance(widget, (Input, TextArea)):
                widget.cursor_blink = False
    return run_before


async def open_factscore(pilot) -> None:
    from tui.screens.factscore import FactScoreScreen

    await pilot.app.push_screen(FactScoreScreen(pilot.app.services, Path("out/surveys/example.md")))


def test_assistant_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), run_before=steady(), terminal_size=SIZE)


def test_survey_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), run_before=steady("f2"), terminal_size=SIZE)


def test_settings_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), run_before=steady("f4"), terminal_size=SIZE)


def test_factscore_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), run_before=steady(then=open_factscore), terminal_size=SIZE)
