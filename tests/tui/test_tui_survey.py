"""Survey mode end to end: the real default model over a real index of shared-corpus papers, driven from the
topic input: the outline and the references panel fill live, Esc interrupts after the first section is
checkpointed, the survey is resumed from the list (its finished section reused), saved as Markdown + BibTeX,
and scored by the FactScore screen."""
import asyncio
import json
import re

from textual.widgets import DataTable, ListView, Tree

from agents.events import SectionsSaved, SurveyDone
from tests.tui.test_tui_app import screenshot, wait_for_group
from tui.app import CpmApp
from tui.screens.factscore import FactScoreScreen
from tui.screens.pick import PickScreen
from tui.services import Services
from tui.settings import TuiSettings
from tui.widgets.survey import SurveyPane
from tui.widgets.telemetry import TelemetryBlock

TOPIC_WORDS = re.compile(r"quantiz|speculative decoding|kv cache", re.I)


def small_index(corpus_path, directory, n: int = 60):
    """n on-topic papers (60: about half a minute on 2 cores), embedded for real."""
    from retrieval import IndexConfig, build_index, read_documents

    subset = directory / "papers.jsonl"
    with corpus_path.open() as f:
        lines = [line for line in f if TOPIC_WORDS.search(json.loads(line)["title"])][:n]
    subset.write_text("".join(lines))
    build_index(read_documents([subset]), directory / "index", IndexConfig(progress=False, max_seq_length=128))
    return directory / "index"


async def start_survey(app, pilot, monkeypatch, sections: int = 2) -> list[type]:
    """Open Survey mode and start a survey on the quantization topic; the returned list fills with the class of
    every event the pane shows."""
    pane = app.query_one(SurveyPane)
    seen: list[type] = []
    show = pane.show_event
    monkeypatch.setattr(pane, "show_event", lambda event: (seen.append(type(event)), show(event)))
    await pilot.press("f2")
    app.query_one("#topic").value = "efficient LLM inference with quantization"
    app.query_one("#sections").value = str(sections)
    await pilot.click("#write")
    return seen


async def test_survey_mode_interrupt_resume_save_factscore(corpus_path, smollm2_path, tmp_path, monkeypatch):
    index = small_index(corpus_path, tmp_path)
    monkeypatch.chdir(tmp_path)   # checkpoints and saved surveys go under out/
    settings = TuiSettings(index_dir=str(index), survey_parallel=1)  # one section at a time: stop after the first
    app = CpmApp(settings, Services(settings))
    async with app.run_test(size=(160, 45)) as pilot:
        pane = app.query_one(SurveyPane)
        seen = await start_survey(app, pilot, monkeypatch)
        while SectionsSaved not in seen:   # the first section is in the checkpoint: interrupt the run
            assert SurveyDone not in seen and any(w.group == "survey" for w in app.workers), seen
            await asyncio.sleep(0.1)
        await pilot.press("escape")
        await asyncio.to_thread(pane.idle.wait, 600)   # the survey thread ends at its next event
        await pilot.pause()
        assert SurveyDone not in seen and "stopped;" in str(app.query_one("#survey-status").render())
        # Resume from the list: the interrupted survey is there with one section done.
        await pilot.press("f6")
        assert isinstance(app.screen, PickScreen)
        thread, cells = app.screen.rows[0]
        assert thread == pane.thread_id and cells[2].startswith("1/2"), app.screen.rows
        await pilot.press("enter")
        await wait_for_group(app, pilot, "survey", timeout=1200)
        labels = [str(node.label) for node in app.query_one("#outline", Tree).root.children]
        assert len(labels) == 2 and all("done" in label for label in labels), labels
        assert "reused" in labels[0], labels
        assert len(app.query_one("#reference-list", ListView).children) >= 2   # reused section's papers too
        assert "## References" in app.query_one("#section-text")._markdown
        assert "steps" in str(app.query_one(TelemetryBlock).title)   # the engine's cost of every model call
        assert "tok/s" in app.sub_title
        screenshot(app, "survey")
        await pilot.press("ctrl+s")
        await pilot.pause()
        # FactScore of the finished survey (the lexical judge keeps the test short; the default is the CLI's).
        await pilot.press("f7")
        screen = app.screen
        assert isinstance(screen, FactScoreScreen) and screen.survey == pane.saved
        screen.query_one("#judge").value = "lexical"
        screen.query_one("#extract").value = "sentence"
        await pilot.click("#run-factscore")
        await wait_for_group(app, pilot, "factscore", timeout=300)
        table = screen.query_one("#factscore-table", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert rows[-1][0] == "overall" and int(rows[-1][1]) > 0, rows
        screenshot(app, "factscore")
    saved = list((tmp_path / "out" / "surveys").glob("*.md"))
    assert saved and "## References" in saved[0].read_text()
    assert saved[0].with_suffix(".bib").read_text().count("@") >= 2
    assert json.loads(saved[0].with_suffix(".trace.json").read_text())["sections"]
    assert saved[0].with_suffix(".factscore.json").exists()
