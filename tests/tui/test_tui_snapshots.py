"""Snapshot tests (pytest-textual-snapshot) of the two main screens; update with --snapshot-update."""
from tui.app import CpmApp
from tui.settings import TuiSettings


def test_assistant_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), terminal_size=(140, 40))


def test_survey_screen(snap_compare):
    assert snap_compare(CpmApp(TuiSettings()), press=["f2"], terminal_size=(140, 40))
