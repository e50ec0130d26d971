"""Survey mode: topic in; live outline whose sections tick through their stages; the current section's text
streaming in; the retrieved papers per section; save/export; FactScore; resume of an interrupted survey.

The survey graph runs in a thread worker with its own event loop (the engine is blocking, in-process work),
and every event comes back to the UI through `call_from_thread`.
"""
from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, ListItem, ListView, Markdown, Static, Tree
from textual.worker import get_current_worker

from agents.events import (OutlineReady, Retry, SectionDone, SectionToken, StageStarted, SurveyDone, SurveyEvent,
                           SurveyStarted)
from survey.outline import Outline
from tui.widgets import RateMeter, cancel_workers
from tui.widgets.telemetry import TelemetryBlock

CHECKPOINTS = Path("out/survey-checkpoints.sqlite")
OUT_DIR = Path("out/surveys")
STAGE_MARK = {"queries": "planning", "retrieve": "retrieving", "write": "writing", "check": "checking",
              "revise": "revising", "plan": "planning"}


class SurveyPane(Vertical):
    """Runs `agents.survey.runner.stream_survey` and shows its events."""

    def __init__(self, services, **kwargs) -> None:
        super().__init__(**kwargs)
        self.services = services
        self.result: SurveyDone | None = None
        self.thread_id: str | None = None
        self._sections: dict[int, object] = {}
        self._titles: dict[int, str] = {}
        self._reference_ids: set[str] = set()
        self._stream_section: int | None = None
        self._meter: RateMeter | None = None
        self.saved: Path | None = None
        # Set while no survey thread runs. A cancelled thread worker counts as finished at once, but its
        # thread goes on to the next event: a new run must not start on the same checkpoints before it ends.
        self.idle = threading.Event()
        self.idle.set()

    def compose(self) -> ComposeResult:
        with Horizontal(id="survey-options"):
            yield Input(placeholder="Survey topic, e.g. speculative decoding for LLM inference", id="topic")
            yield Input(value="5", id="sections", type="integer", max_length=2, tooltip="body sections")
            yield Button("Write", variant="primary", id="write")
            yield Button("Resume…", id="resume", tooltip="continue an interrupted survey (F6)")
            yield Button("Save", id="save", disabled=True, tooltip="Markdown, BibTeX and trace under out/surveys")
            yield Button("FactScore…", id="factscore", tooltip="score this or a saved survey (F7)")
        with Horizontal(id="survey-body"):
            tree: Tree[int] = Tree("Outline", id="outline")
            tree.root.expand()
            yield tree
            yield Markdown("", id="section-text")
            with Vertical(id="references"):
                yield Label("References")
                yield ListView(id="reference-list")
        yield Static("", id="survey-status")

    # ---- starting a run -------------------------------------------------------------------------------
    @on(Button.Pressed, "#write")
    @on(Input.Submitted, "#topic")
    @on(Input.Submitted, "#sections")
    def start(self) -> None:
        topic = self.query_one("#topic", Input).value.strip()
        if not topic:
            self.app.notify("type a topic first", severity="warning")
            return
        sections = int(self.query_one("#sections", Input).value or 5)
        if self._busy():
            return
        self._reset()
        self.run_survey(topic, sections, resume=None)

    @on(Button.Pressed, "#resume")
    def pick_resume(self) -> None:
        """The interrupted surveys of the checkpoint database; the picked one continues, reusing its sections."""
        from tui.screens.pick import PickScreen
        from tui.services import survey_threads

        try:
            threads = survey_threads(CHECKPOINTS)
        except Exception as exc:  # a damaged database must not take the app down
            self.app.notify(f"cannot read {CHECKPOINTS}: {exc}", severity="error")
            return
        rows = [(t["thread_id"], (t["thread_id"], t["topic"][:40], f"{t['done']}/{t['total']}",
                                  t["updated"].strftime("%Y-%m-%d %H:%M"))) for t in threads]
        self.app.push_screen(PickScreen("Resume a survey", ("thread", "topic", "sections done", "last update"),
                                        rows, f"no interrupted surveys in {CHECKPOINTS}"), self.resume)

    def resume(self, thread_id: str | None) -> None:
        if thread_id and not self._busy():
            self._reset()
            self.run_survey(None, 0, resume=thread_id)

    def _busy(self) -> bool:
        if self.idle.is_set():
            return False
        self.app.notify("a survey is still running or stopping: wait for it (Esc stops it)", severity="warning")
        return True

    def _reset(self) -> None:
        self.result = None
        self._sections.clear()
        self._titles.clear()
        self._reference_ids.clear()
        self._stream_section = None
        tree = self.query_one("#outline", Tree)
        tree.clear()
        self.query_one("#reference-list", ListView).clear()
        self.query(TelemetryBlock).remove()
        self.query_one("#section-text", Markdown).update("")
        self.query_one("#save", Button).disabled = True
        self.saved = None
        self._meter = RateMeter()
        self.idle.clear()   # here, not in the thread: a second Write before the thread starts must wait too

    @work(thread=True, exclusive=True, group="survey")
    def run_survey(self, topic: str | None, sections: int, resume: str | None) -> None:
        from agents.survey.configuration import Configuration
        from agents.survey.runner import stream_survey

        worker = get_current_worker()
        call = self.app.call_from_thread
        try:
            call(self._status, "loading index and model…")
            retriever = self.services.index()
            model = self.services.chat_model()
            settings = None if resume else Configuration(sections=sections, words_per_section=80,
                                                         max_parallel=self.app.settings.survey_parallel)
            if resume:
                from tui.services import survey_sources

                for src in survey_sources(CHECKPOINTS, resume):
                    call(self._add_reference, src)

            async def consume() -> None:
                events = stream_survey(topic, model=model, retriever=retriever, db_path=CHECKPOINTS,
                                       settings=settings, thread_id=resume, resume=bool(resume))
                try:
                    async for event in events:
                        if worker.is_cancelled:
                            call(self._status, f"stopped; resume survey {self.thread_id} with Resume (F6)")
                            return
                        call(self.show_event, event)
                finally:
                    await events.aclose()   # closes the checkpoint database inside this loop

            asyncio.run(consume())
        except Exception as exc:  # the user sees it and the app keeps running
            call(self._status, "")
            call(self.app.notify, f"survey failed: {exc}", severity="error", timeout=10)
        finally:
            self.idle.set()

    # ---- events ---------------------------------------------------------------------------------------
    def show_event(self, event: SurveyEvent) -> None:
        tree = self.query_one("#outline", Tree)
        match event:
            case SurveyStarted():
                self.thread_id = event.thread_id
                self._status(f"survey {self.thread_id}: planning…")
                if event.outline:
                    self._show_outline(event.outline, done=event.sections_done)
            case OutlineReady(outline=outline):
                self._show_outline(outline, done=[])
            case StageStarted(section=section, stage=stage):
                self._mark(section, STAGE_MARK.get(stage, stage))
                if section != self._stream_section:
                    self._stream_section = section
                    self.query_one("#section-text", Markdown).update(f"## {self._titles.get(section, '')}\n\n")
            case SectionToken(stage=stage, text=text):
                rate = self._meter.tick() if self._meter else None
                if rate:
                    self.post_message(rate)
                if stage in ("write", "revise"):
                    self.query_one("#section-text", Markdown).append(text)
            case Retry(error=error):
                self.app.notify(f"backend failed, retrying ({error})", severity="warning")
            case SectionDone():
                self._mark(event.section, f"done · {event.cited} cited")
                for src in event.sources:
                    self._add_reference(src)
            case SurveyDone():
                self.result = event
                if self._meter:
                    self.post_message(self._meter.final())
                self.query_one("#save", Button).disabled = False
                self.query_one("#section-text", Markdown).update(event.markdown or "")
                telemetry = (event.trace or {}).get("telemetry") or {}
                if telemetry.get("steps"):
                    self.mount(TelemetryBlock(telemetry, label_keys=("section", "stage")),
                               before=self.query_one("#survey-status"))
                self._status(f"survey {event.thread_id} done in {event.wall_s:.0f}s — Save writes it to {OUT_DIR}/")
        tree.refresh()

    def _show_outline(self, outline: Outline, done: list[int]) -> None:
        tree = self.query_one("#outline", Tree)
        for i, sec in enumerate(outline.sections):
            self._titles[i] = sec.title
            self._sections[i] = tree.root.add_leaf(Text(f"{i + 1}. {sec.title}"), data=i)
            self._mark(i, "done (reused)" if i in done else "waiting")

    def _mark(self, section: int, state: str) -> None:
        node = self._sections.get(section)
        if node is not None:
            # The state leads: a long title is cut at the panel's edge, the state must stay in view.
            node.set_label(Text(f"{section + 1}. [{state}] {self._titles[section]}"))  # Text: no markup
        else:
            name = {-1: "introduction", -2: "conclusion"}.get(section) or self._titles.get(section)
            self._status(f"{name or f'section {section + 1}'}: {state}")

    def _add_reference(self, src: dict) -> None:
        """One line per paper, however many sections cite it (and on resume, however often it is reported)."""
        key = src.get("id") or src.get("title", "")
        if key in self._reference_ids:
            return
        self._reference_ids.add(key)
        item = ListItem(Label(f"{src.get('title', '')[:60]} ({src.get('year') or '?'}) {src.get('id', '')}"))
        item.source = src
        self.query_one("#reference-list", ListView).append(item)

    @on(ListView.Selected, "#reference-list")
    def open_reference(self, event: ListView.Selected) -> None:
        from tui.screens.document import DocumentScreen

        self.app.push_screen(DocumentScreen(getattr(event.item, "source", {})))

    @on(Button.Pressed, "#save")
    def save(self) -> Path | None:
        """Write the finished survey as `cpm survey` does: Markdown, BibTeX and the JSON trace."""
        if not self.result:
            self.app.notify("no finished survey to save yet", severity="warning")
            return None
        r = self.result
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        md = OUT_DIR / f"{r.thread_id}.md"
        md.write_text(r.markdown or "", encoding="utf-8")
        md.with_suffix(".bib").write_text(r.bibtex or "", encoding="utf-8")
        trace = {**(r.trace or {}), "last_run": {"run_id": r.run_id, "wall_s": round(r.wall_s, 3)}}
        md.with_suffix(".trace.json").write_text(json.dumps(trace, indent=2), encoding="utf-8")
        self.saved = md
        self.app.notify(f"saved {md}, {md.with_suffix('.bib')} and {md.with_suffix('.trace.json')}")
        return md

    @on(Button.Pressed, "#factscore")
    def factscore(self) -> None:
        """Score the finished survey (saved first), or pick a saved one."""
        if self.result:
            self.open_factscore(self.saved or self.save())
            return
        from tui.screens.pick import PickScreen

        files = sorted(OUT_DIR.glob("*.md"), key=lambda p: p.stat().st_mtime, reverse=True)
        rows = [(str(p), (p.name, f"{p.stat().st_size // 1024 + 1} KB")) for p in files]
        self.app.push_screen(PickScreen("FactScore of a saved survey", ("survey", "size"), rows,
                                        f"no saved surveys in {OUT_DIR}/: write one first"), self.open_factscore)

    def open_factscore(self, path: str | Path | None) -> None:
        from tui.screens.factscore import FactScoreScreen

        if path:
            self.app.push_screen(FactScoreScreen(self.services, Path(path)))

    def _status(self, text: str) -> None:
        self.query_one("#survey-status", Static).update(text)

    def cancel(self) -> bool:
        """Cancel the running survey (it stops at its next event); True when there was one."""
        stopping = cancel_workers(self, "survey")
        if stopping:
            self._status("stopping at the next step…")
            if self._meter is not None:
                self.post_message(self._meter.final())  # the header's rate stops saying "generating"
                self._meter = None
        return stopping
