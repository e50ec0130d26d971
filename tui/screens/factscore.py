"""FactScore of a survey file, in the app: pick the judge, run it in a thread worker with progress, and show
the per-section table (claims, supported, score, citation precision/recall) and the overall row.

It runs `survey.factscore.evaluate` as `cpm eval factscore` does, and writes the same JSON report and cache
beside the survey (SURVEY.factscore.json, SURVEY.factscore.cache.sqlite), so a re-run resumes from the cache.
"""
from __future__ import annotations

import json
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Label, ProgressBar, Select, Static
from textual.worker import get_current_worker

from tui.services import JUDGES

COLUMNS = ("section", "claims", "supported", "FactScore", "w/ length penalty", "cit. precision", "cit. recall")


class Stopped(Exception):
    """Raised from the progress callback when the user closes the screen: evaluate stops at that sentence."""


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def score_row(row: dict) -> tuple[str, ...]:
    return (row["section"][:40], str(row["claims"]), str(row["supported"]), percent(row["factscore"]),
            percent(row["factscore_length_penalized"]), percent(row["citation_precision"]),
            percent(row["citation_recall"]))


class FactScoreScreen(ModalScreen[dict | None]):
    """Returns the report of the last finished run (or None)."""

    BINDINGS = [("escape", "close", "Close")]

    def __init__(self, services, survey: Path, judge: str = "auto", extract: str = "sentence") -> None:
        super().__init__()
        self.services, self.survey = services, Path(survey)
        self.judge, self.extract = judge, extract
        self.report: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="factscore-dialog"):
            yield Label(f"[b]FactScore[/b] of {self.survey}", id="factscore-title")
            with Horizontal(id="factscore-options"):
                yield Select([(f"judge: {j}", j) for j in JUDGES], value=self.judge, allow_blank=False,
                             id="judge")
                # one claim per sentence by default, as `cpm eval factscore`: the 135M default model's own
                # claims are mostly rejected as invented (docs/factscore.md)
                yield Select([("claims: one per sentence", "sentence"), ("claims: by the model", "model")],
                             value=self.extract, allow_blank=False, id="extract")
                yield Button("Run", variant="primary", id="run-factscore")
            yield ProgressBar(total=1, id="factscore-progress", show_eta=False)   # not animated until a run
            yield Static("", id="factscore-status")
            yield DataTable(id="factscore-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="factscore-summary")

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)

    @on(Button.Pressed, "#run-factscore")
    def start(self) -> None:
        self.query_one("#run-factscore", Button).disabled = True
        self.query_one(DataTable).clear()
        self.query_one("#factscore-summary", Static).update("")
        self.run_factscore(self.query_one("#judge", Select).value, self.query_one("#extract", Select).value)

    @work(thread=True, exclusive=True, group="factscore")
    def run_factscore(self, judge: str, extract: str) -> None:
        from survey.factscore import FactScoreConfig, evaluate
        from survey.factscore.cache import ClaimCache

        worker = get_current_worker()
        call = self.app.call_from_thread

        def progress(done: int, total: int, section: str) -> None:
            if worker.is_cancelled:
                raise Stopped
            call(self._progress, done, total, f"{done}/{total} sentences · {section[:50]}")

        out = self.survey.with_suffix(".factscore.json")
        try:
            text = self.survey.read_text(encoding="utf-8", errors="replace")
            call(self._progress, 0, None, "loading the index and the judge (the first time takes a while)…")
            index = self.services.index()
            llm, judge_obj, name = self.services.factscore_judge(judge, extract)
            config = FactScoreConfig(model_name=name, extract_with_model=extract == "model")
            cache = ClaimCache(out.with_suffix(".cache.sqlite"))
            try:
                report = evaluate(text, llm=llm, index=index, judge=judge_obj, config=config, cache=cache,
                                  progress=progress)
            finally:
                cache.close()
            report["survey"] = str(self.survey)
            out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
            call(self.show_report, report, out)
        except Stopped:
            return
        except Exception as exc:  # shown, and the app keeps running
            call(self._progress, 0, 1, "")
            call(self.app.notify, f"FactScore failed: {exc}", severity="error", timeout=10)
        finally:
            call(self._enable_run)

    def _progress(self, done: int, total: int | None, text: str) -> None:
        if not self.is_attached:   # closed while the worker finished its sentence
            return
        self.query_one(ProgressBar).update(total=total, progress=done)
        self.query_one("#factscore-status", Static).update(text)

    def _enable_run(self) -> None:
        if self.is_attached:
            self.query_one("#run-factscore", Button).disabled = False

    def show_report(self, report: dict, out: Path) -> None:
        self.report = report
        table = self.query_one(DataTable)
        for row in report["per_section"]:
            table.add_row(*score_row(row))
        table.add_row(*score_row({**report["summary"], "section": "overall"}), key="overall")
        s = report["summary"]
        lines = [f"judge {report['judge']}; claims by the model {s['claims_by_model']}/{s['claims']}; "
                 f"cache hits {report['cache_hits']}; report {out}"]
        lines += [f"problem: {p}" for p in report["problems"][:5]]
        self.query_one("#factscore-summary", Static).update("\n".join(lines))
        self.query_one("#factscore-status", Static).update(
            f"FactScore {percent(report['factscore'])} · citation precision {percent(report['citation_precision'])}"
            f" · recall {percent(report['citation_recall'])}")

    def action_close(self) -> None:
        self.workers.cancel_group(self, "factscore")   # stops at the next sentence; the cache keeps what is done
        self.dismiss(self.report)
