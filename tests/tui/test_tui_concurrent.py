"""Both modes at once on one loaded model (issue 22): a survey is being written in Survey mode when the user switches
to the Assistant and asks a question; the turn is answered while the survey goes on, and the survey finishes too.
The real default model, a real index of shared-corpus papers, Textual under run_test()."""
import asyncio
import threading

import pytest

from agents.events import SectionToken, SurveyDone
from tests.tui.test_tui_app import wait_for_group
from tests.tui.test_tui_survey import small_index, start_survey
from tui.app import CpmApp
from tui.services import Services
from tui.settings import TuiSettings
from tui.widgets.assistant import ChatMessage
from tui.widgets.survey import SurveyPane


class PeakRunning:
    """The most sequences the engine's loop held at once, read from its stats (what `cpm serve` /metrics reports)."""

    def __init__(self, engine) -> None:
        self.engine, self.peak = engine, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.engine.stats().running)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def replies(app) -> list[str]:
    """The assistant's reply texts so far (a reply block is mounted with the first streamed token)."""
    return [m._markdown for m in app.query(ChatMessage) if m.role == "assistant" and m._markdown.strip()]


@pytest.mark.slow  # a two-section survey and a chat turn on the real model: 1-2 min on 2 shared cores
async def test_assistant_turn_while_a_survey_is_written(corpus_path, smollm2_path, tmp_path, monkeypatch):
    index = small_index(corpus_path, tmp_path, n=40)
    monkeypatch.chdir(tmp_path)   # checkpoints and chat sessions go under out/
    settings = TuiSettings(index_dir=str(index), max_tokens=32)
    services = Services(settings)
    app = CpmApp(settings, services)
    async with app.run_test(size=(160, 45)) as pilot:
        pane = app.query_one(SurveyPane)
        seen = await start_survey(app, pilot, monkeypatch)
        while SectionToken not in seen:   # the survey's model is generating
            assert SurveyDone not in seen and any(w.group == "survey" for w in app.workers), seen
            await asyncio.sleep(0.1)
        engine = services.chat_model().engine   # the one loaded model both modes use
        peak = PeakRunning(engine)
        try:
            await pilot.press("f3")
            # Typed in one go: the pilot waits for an idle app after every key, and a streaming survey keeps
            # the app busy, so key by key would measure the pilot, not the app.
            app.query_one("#prompt").value = "Name one benefit of quantization."
            await pilot.click("#prompt")
            await pilot.press("enter")
            # The answer streams in while the survey is still being written: the turn does not wait for it.
            answered_during_survey = None
            deadline = asyncio.get_running_loop().time() + 600
            while any(w.group == "assistant" and not w.is_finished for w in app.workers):
                assert asyncio.get_running_loop().time() < deadline, "the turn is still running after 600 s"
                if answered_during_survey is None and replies(app):
                    answered_during_survey = SurveyDone not in seen
                await asyncio.sleep(0.05)
            await pilot.pause()
            if answered_during_survey is None:   # the whole turn fell between two looks
                answered_during_survey = SurveyDone not in seen
            assert replies(app), [m._markdown for m in app.query(ChatMessage)]
            assert answered_during_survey, "the answer came only after the survey was done"
            assert not list(app.query(".error")), "the turn failed"
            await wait_for_group(app, pilot, "survey", timeout=1200)
        finally:
            most = peak.stop()
        assert SurveyDone in seen and pane.result is not None
        assert "## References" in (pane.result.markdown or "")
        assert not [n.message for n in app._notifications if n.severity == "error"]
        assert most >= 2, f"the engine never ran the survey's and the turn's sequences together (peak {most})"
        await pilot.press("ctrl+q")  # quitting waits until the chat session's SQLite checkpointer has closed
