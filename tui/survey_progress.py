"""Rich progress for `cpm survey` and `cpm demo`: one line per stage/section, fed by the runner's events."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from agents.events import (NodeFinished, OutlineReady, Retry, SectionDone, SectionsSaved, SectionToken,
                           StageStarted, SurveyEvent, SurveyStarted)
from survey.outline import Outline


class SurveyProgress:
    """Context manager; `update(event)` for every event of `agents.survey.runner.stream_survey`."""

    def __init__(self, quiet: bool = False, console: Console | None = None, index: str = "DIR"):
        self.quiet = quiet
        self.index = index
        self.console = console or Console(stderr=True)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                                 disable=quiet)
        self.overall = None
        self.tasks: dict[int, int] = {}
        self.titles: dict[int, str] = {-1: "plan / introduction", -2: "conclusion"}
        self.tokens: dict[int, int] = {}

    def __enter__(self) -> "SurveyProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _name(self, section: int) -> str:
        """'2. Speculative decoding', from the outline; a number only before any outline is known."""
        return self.titles.get(section, f"section {section + 1}")

    def _learn_outline(self, outline: Outline | None) -> None:
        for i, sec in enumerate(outline.sections if outline else []):
            self.titles[i] = f"{i + 1}. {sec.title}"

    def _task(self, section: int) -> int:
        if section not in self.tasks:
            self.tasks[section] = self.progress.add_task(escape(self._name(section)[:48]), total=1, info="")
        return self.tasks[section]

    def update(self, event: SurveyEvent) -> None:
        match event:
            case SurveyStarted():
                verb = "resuming" if event.resume else "writing"
                self.console.print(f"{verb} survey [bold]{event.thread_id}[/] (resume with "
                                   f"`cpm survey --resume {event.thread_id} --index {self.index}`)")
                self.overall = self.progress.add_task("survey", total=event.settings["sections"] + 2, info="")
                self._learn_outline(event.outline)  # a resumed survey knows its outline from the start
                if event.sections_done and event.outline:
                    for i in event.sections_done:
                        self.progress.update(self._task(i), completed=1, info="reused")
                    self.progress.advance(self.overall, len(event.sections_done))
            case OutlineReady(outline=outline):
                self._learn_outline(outline)
                for i in range(len(outline.sections)):
                    self._task(i)
                self.progress.advance(self.overall, 1)
            case StageStarted(section=section, stage=stage):
                self.progress.update(self._task(section), info=stage)
            case SectionToken(section=s, stage=stage):
                self.tokens[s] = self.tokens.get(s, 0) + 1
                self.progress.update(self._task(s), info=f"{stage} ({self.tokens[s]} tok)")
            case Retry():
                self.console.print(f"[yellow]backend failed during {event.stage} "
                                   f"({escape(self._name(event.section))}), retrying (attempt {event.attempt}): "
                                   f"{escape(event.error)}[/]")
            case SectionDone():
                self.progress.update(self._task(event.section), completed=1,
                                     info=f"{event.cited} papers cited, {event.seconds:.0f}s")
                self.progress.advance(self.overall, 1)
            case SectionsSaved(sections=sections):
                done = "; ".join(self._name(i) for i in sections)
                self.console.print(f"checkpoint: section {escape(done)} saved")  # tests match this prefix
            case NodeFinished(node="frame"):
                for s in (-1, -2):
                    self.progress.update(self._task(s), completed=1, info="done")
                self.progress.advance(self.overall, 1)
