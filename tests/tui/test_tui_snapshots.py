"""Snapshot tests (pytest-textual-snapshot) of the main screens; update with --snapshot-update."""
from pathlib import Path

from tui.app import CpmApp
from tui.settings import TuiSettings


def test_assistant_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), terminal_size=(140, 40))


def test_survey_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), press=["f2"], terminal_size=(140, 40))


def test_settings_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), press=["f4"], terminal_size=(140, 40))


def test_factscore_screen(snap_compare):
    from tui.screens.factscore import FactScoreScreen

    async def open_screen(pilot) -> None:
        app = pilot.app
        await app.push_screen(FactScoreScreen(app.services, Path("out/surveys/example.md")))

    assert snap_compare(CpmApp(TuiSettings()), run_before=open_screen, terminal_size=(140, 40))
