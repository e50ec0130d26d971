"""Pilot tests of the rough edges a new user hit (issue 32): Enter in the sections field, outline states in view,
references listed once, the header's rate after Esc, `cpm tui --index` in Survey mode, resume progress names.

The survey events fed to the pane are the typed events `agents.survey.runner.stream_survey` yields; no model runs
here.
"""
import asyncio
import io

from rich.console import Console
from textual.widgets import ListView, TabbedContent, Tree

from agents.events import OutlineReady, SectionDone, SectionsSaved, StageStarted, SurveyStarted
from tests.tui.test_tui_app import wait_for_group
from tui.app import CpmApp
from tui.cli import build_parser
from tui.commands.tui import make_app
from tui.settings import TuiSettings
from tui.survey_progress import SurveyProgress
from tui.widgets import TokenRate
from tui.widgets.survey import SurveyPane

LONG = "Speculative decoding with draft trees and verification for large language model inference"
OUTLINE = {"title": "A survey", "sections": [{"title": t, "goal": "covers " + t}
                                             for t in ("Quantization", LONG, "KV cache compression")]}


def start_event(done=()):
    return SurveyStarted(thread_id="t1", topic="inference", run_id="r1", resume=bool(done), settings={"sections": 3},
                         sections_done=list(done), outline=OUTLINE if done else None)


async def test_enter_in_sections_field_starts_the_survey():
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f2")
        app.query_one("#topic").value = "speculative decoding"
        await pilot.click("#sections")
        await pilot.press("backspace", "3", "enter")
        await wait_for_group(app, pilot, "survey")
        # No index is configured: the run started, and says what to do.
        assert any("no index directory" in str(n.message) for n in app._notifications)


async def test_outline_state_stays_in_view_and_references_are_listed_once():
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f2")
        pane = app.query_one(SurveyPane)
        pane._reset()
        pane.show_event(start_event())
        pane.show_event(OutlineReady(outline=OUTLINE))
        pane.show_event(StageStarted(section=1, stage="write"))
        a = {"id": "2503.00001", "title": "Paper A", "year": 2025}
        b = {"id": "2503.00002", "title": "Paper B", "year": 2025}
        pane.show_event(SectionDone(section=0, title="Quantization", cited=2, seconds=3.0, sources=[a, b]))
        pane.show_event(SectionDone(section=2, title="KV cache compression", cited=2, seconds=3.0, sources=[b, a]))
        await pilot.pause()
        tree = app.query_one("#outline", Tree)
        labels = [node.label.plain for node in tree.root.children]
        assert labels[1].startswith("2. [writing] Speculative") and labels[1].endswith("model inference")
        assert labels[0].startswith("1. [done · 2 cited]")
        visible = [tree.render_line(y).text for y in range(tree.size.height)]
        assert any("[writing]" in line for line in visible), visible  # the state is drawn, not cut off
        assert len(app.query_one("#reference-list", ListView).children) == 2


async def test_header_stops_saying_generating_after_escape():
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        pane = app.query_one(SurveyPane)
        pane._reset()
        pane.run_worker(asyncio.sleep(60), group="survey")   # stands in for a running survey worker
        pane.post_message(TokenRate(19, 2.0))
        await pilot.pause()
        assert "9.5 tok/s (generating)" in app.sub_title
        await pilot.press("escape")
        await pilot.pause()
        pane.post_message(TokenRate(25, 2.5))   # a rate that was on its way when Esc came
        await pilot.pause()
        assert "tok/s" in app.sub_title and "generating" not in app.sub_title, app.sub_title


async def test_tui_with_index_opens_in_survey_mode(tmp_path):
    args = build_parser().parse_args(["tui", "--index", str(tmp_path)])
    app = make_app(args)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        assert app.query_one("#modes", TabbedContent).active == "survey"
        assert app.focused is app.query_one("#topic")
    plain = make_app(build_parser().parse_args(["tui"]))
    async with plain.run_test(size=(140, 40)):
        assert plain.query_one("#modes", TabbedContent).active == "assistant"


async def test_resumed_survey_shows_section_titles():
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f2")
        pane = app.query_one(SurveyPane)
        pane._reset()
        pane.show_event(start_event(done=[0]))
        pane.show_event(StageStarted(section=2, stage="retrieve"))
        await pilot.pause()
        labels = [node.label.plain for node in app.query_one("#outline", Tree).root.children]
        assert labels == ["1. [done (reused)] Quantization", f"2. [waiting] {LONG}",
                          "3. [retrieving] KV cache compression"]


def test_cli_resume_progress_names_sections_by_title():
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    with SurveyProgress(console=console) as progress:
        progress.update(start_event(done=[0]))
        progress.update(StageStarted(section=2, stage="write"))
        progress.update(SectionsSaved(sections=[2]))
        descriptions = [t.description for t in progress.progress.tasks]
    assert "3. KV cache compression" in descriptions and "1. Quantization" in descriptions
    assert not any(d.startswith("section ") for d in descriptions), descriptions
    assert "checkpoint: section 3. KV cache compression saved" in out.getvalue()
