"""`cpm survey TOPIC --index DIR`: write a cited survey (Markdown + BibTeX + JSON trace); `--resume ID` continues.

`cpm survey export SURVEY.md --index DIR --format {md,tex,bib} [--out FILE] [--force]` exports a written survey,
refusing one whose citations do not resolve to documents in the index (survey/export.py).

The model, FAISS and LangGraph are imported inside `run`, so `cpm --help` stays fast.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

DEFAULT_DB = Path("out/survey-checkpoints.sqlite")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("survey", help="write a survey with numbered citations from a paper index",
                       description="Plan -> retrieve -> write with [n] citations -> check/revise -> render "
                                   "Markdown, BibTeX and a JSON trace. Interrupted runs resume with --resume. "
                                   "`cpm survey export SURVEY.md --index DIR --format {md,tex,bib}` exports a "
                                   "written survey, refusing citations that are not in the index (--force marks "
                                   "them).")
    p.add_argument("topic", nargs="?", help="survey topic (not needed with --resume), or `export`")
    p.add_argument("survey_file", nargs="?", type=Path, metavar="SURVEY.md",
                   help="with `export`: the survey Markdown to export")
    p.add_argument("--index", type=Path, help="index directory built with `cpm index build`")
    p.add_argument("--sections", type=int, default=5, help="body sections (default 5)")
    p.add_argument("--words-per-section", type=int, default=120, help="target words per section (default 120)")
    p.add_argument("--sources", type=int, default=4, help="retrieved papers written up per section (default 4)")
    p.add_argument("--queries", type=int, default=1, help="model-written search queries per section, besides "
                                                          "the heading and keyphrases (default 1; 0 for none)")
    p.add_argument("--write-mode", choices=["per_source", "section"], default="per_source",
                   help="per_source (default): one grounded sentence per paper, built from its abstract and "
                        "cited by construction, suits small models; section: the model writes each section with "
                        "[n] citations, checked and revised")
    p.add_argument("--no-rewrite", action="store_true", help="per_source: skip the model's rewrite of each "
                                                              "paper's key sentences (faster; the pipeline's "
                                                              "sentences only)")
    p.add_argument("--out", type=Path, help="Markdown file to write (default out/surveys/THREAD_ID.md); "
                                            ".bib and .trace.json are written beside it. With `export`: the "
                                            "file to write (default: standard output)")
    p.add_argument("--backend", choices=["engine", "openai"], help="chat backend (default: $CPM_BACKEND or engine)")
    p.add_argument("--model", help="model alias or path (engine) or served model name (openai)")
    from agents.chat.factory import BaseUrlAction

    p.add_argument("--base-url", action=BaseUrlAction, help="OpenAI-compatible server URL (openai backend); "
                   "repeat it (or a comma list) for several servers")
    p.add_argument("--parallel", type=int, default=4, help="sections written at once (default 4: the engine "
                                                           "batches them; 1 for one at a time)")
    p.add_argument("--resume", metavar="THREAD_ID", help="continue an interrupted survey")
    p.add_argument("--checkpoints", type=Path, default=DEFAULT_DB, help=f"checkpoint database (default {DEFAULT_DB})")
    p.add_argument("--quiet", action="store_true", help="no progress display, only the final summary")
    p.add_argument("--stats", action="store_true", help="print the engine telemetry table (one row per model call)")
    p.add_argument("--format", choices=["md", "tex", "bib"], default="md",
                   help="with `export`: md, tex (LaTeX citing the BibTeX keys) or bib (default md)")
    p.add_argument("--force", action="store_true", help="with `export`: export even when citations do not "
                                                       "resolve to the index, marking them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agents.survey.configuration import Configuration
    from tui.errors import UsageError

    if args.index is None:
        raise UsageError("--index DIR is required (build one with `cpm index build FILE.jsonl --index DIR`)")
    if args.topic == "export":
        return export(args)
    if args.survey_file is not None:
        raise UsageError(f"unexpected argument {str(args.survey_file)!r}: quote a topic of several words")
    if not args.resume and not args.topic:
        raise UsageError("give a TOPIC, or --resume THREAD_ID to continue a survey")
    for flag, value in (("--sections", args.sections), ("--words-per-section", args.words_per_section),
                        ("--sources", args.sources), ("--parallel", args.parallel)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1 (got {value})")
    if args.queries < 0:  # 0: no model-written queries (what `cpm demo` asks on a CPU)
        raise UsageError(f"--queries must be 0 or more (got {args.queries})")
    out = args.out
    if args.resume:
        check_resumable(args.checkpoints, args.resume)  # before the model loads
        out = out or recorded_out(args.checkpoints, args.resume)
    settings = Configuration(sections=args.sections, words_per_section=args.words_per_section,
                             sources_per_section=args.sources, min_citations=min(3, args.sources),
                             queries_per_section=args.queries, write_mode=args.write_mode, max_parallel=args.parallel,
                             rewrite=not args.no_rewrite)
    retriever = open_index(args.index)
    model = load_model(args.backend, args.model, args.base_url)
    started: dict = {}  # the start event's thread id, for the resume hint if the run is interrupted

    def on_start(event) -> None:
        started["thread_id"] = event.thread_id
        if out is not None:  # now, not at the end: a run killed midway must resume into the same file
            record_out(args.checkpoints, event.thread_id, out)

    try:
        done = asyncio.run(drive(args.topic, model, retriever, settings, args.checkpoints, args.resume, args.quiet,
                                 index_dir=args.index, on_start=on_start))
    except KeyboardInterrupt:
        if started:
            db = "" if args.checkpoints == DEFAULT_DB else f" --checkpoints {args.checkpoints}"
            print(f"finished sections are kept: `cpm survey --resume {started['thread_id']} --index {args.index}{db}` "
                  f"continues", file=sys.stderr)
        raise
    paths = write_outputs(done, out)
    print_summary(done, paths)
    if args.stats:
        from agents.chat.telemetry import stats_table

        print(stats_table([{**step, "step": step_label(step)} for step in done.trace["telemetry"]["steps"]],
                          label_keys=("step",)))
    return 0


def export(args: argparse.Namespace) -> int:
    """`cpm survey export SURVEY.md --index DIR --format F [--out FILE] [--force]`."""
    from survey.export import export_survey
    from tui.errors import UsageError

    if args.survey_file is None:
        raise UsageError("give the survey to export: cpm survey export SURVEY.md --index DIR --format tex")
    if not args.survey_file.is_file():
        raise UsageError(f"no survey file {args.survey_file}: give the .md that `cpm survey` wrote")
    index = open_index(args.index)
    bib_name = (args.out or args.survey_file).with_suffix("").name
    text = export_survey(args.survey_file.read_text(), index, args.format, force=args.force, bib_name=bib_name,
                         where=str(args.survey_file))
    if args.out is None:
        print(text, end="")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}" + (f" (cites {bib_name}.bib: export it with --format bib)" if args.format == "tex"
                                 else ""))
    return 0


def open_index(directory: Path):
    """The index, refusing an empty one with the fix."""
    from retrieval import Index
    from survey.errors import SurveyError

    index = Index.open(directory)
    if len(index) == 0:
        raise SurveyError(f"index {directory} holds no documents: add papers with `cpm index add FILE --index "
                          f"{directory}`")
    return index


def load_model(backend: str | None, model: str | None, base_url: str | None):
    from agents.chat import make_chat_model

    kwargs = {k: v for k, v in (("backend", backend), ("model", model), ("base_url", base_url)) if v}
    return make_chat_model(**kwargs)


async def drive(topic, model, retriever, settings, db: Path, resume_id: str | None, quiet: bool,
                index_dir: Path | None = None, on_start=None):
    """Run the graph, showing rich progress per stage and section; return the `SurveyDone` event (None if the
    stream ended without one)."""
    from agents.events import SurveyDone, SurveyStarted
    from agents.survey.runner import stream_survey
    from tui.survey_progress import SurveyProgress

    progress = SurveyProgress(quiet=quiet, index=str(index_dir or "DIR"))
    done = None
    # Consume the stream to its end, so that the runner closes its SQLite connection inside this loop.
    with progress:
        async for event in stream_survey(topic, model=model, retriever=retriever, db_path=db, settings=settings,
                                         thread_id=resume_id, resume=bool(resume_id)):
            progress.update(event)
            if isinstance(event, SurveyStarted) and on_start is not None:
                on_start(event)
            if isinstance(event, SurveyDone):
                done = event
    return done


def check_resumable(db: Path, thread_id: str) -> None:
    from tui.services import survey_threads
    from tui.errors import UsageError

    if thread_id not in {t["thread_id"] for t in survey_threads(db, interrupted_only=False)}:
        interrupted = [t["thread_id"] for t in survey_threads(db)]
        hint = f"interrupted ones: {', '.join(interrupted[:5])}" if interrupted else "it holds no interrupted survey"
        raise UsageError(f"no survey {thread_id!r} in {db} ({hint})")


def _outs_file(db: Path) -> Path:
    """Beside the checkpoint database: each survey's --out, so that --resume writes where the first run was asked
    to."""
    return db.with_name(db.stem + ".outputs.json")


def _recorded_outs(db: Path) -> dict[str, str]:
    try:
        return json.loads(_outs_file(db).read_text())
    except (OSError, ValueError):  # none yet, or damaged: resume then falls back to out/surveys
        return {}


def recorded_out(db: Path, thread_id: str) -> Path | None:
    out = _recorded_outs(db).get(thread_id)
    return Path(out) if out else None


def record_out(db: Path, thread_id: str, out: Path) -> None:
    outs = {**_recorded_outs(db), thread_id: str(out)}
    _outs_file(db).parent.mkdir(parents=True, exist_ok=True)
    _outs_file(db).write_text(json.dumps(outs, indent=1))


def write_outputs(done, out: Path | None) -> dict[str, Path]:
    """The `SurveyDone` event's Markdown, BibTeX and trace (with this run's id and wall time) on disk."""
    md = Path(out) if out else Path("out/surveys") / f"{done.thread_id}.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    stem = md.with_suffix("")
    paths = {"markdown": md, "bibtex": stem.with_suffix(".bib"), "trace": Path(f"{stem}.trace.json")}
    md.write_text(done.markdown)
    paths["bibtex"].write_text(done.bibtex)
    trace = {**done.trace, "last_run": {"run_id": done.run_id, "wall_s": round(done.wall_s, 3)}}
    paths["trace"].write_text(json.dumps(trace, indent=2))
    return paths


def step_label(step: dict) -> str:
    """`--stats` row names: "section 2 write", "plan", "conclusion" rather than the graph's indices 1, -1, -2."""
    section, stage = step.get("section"), str(step.get("stage") or "")
    name = {-1: "plan", -2: "conclusion", None: ""}.get(section, f"section {section + 1}" if
                                                          isinstance(section, int) else str(section))
    return " ".join(part for part in (name, stage if stage != name else "") if part) or "step"


def print_summary(done, paths: dict[str, Path]) -> None:
    totals = done.trace["totals"]
    body = [s for s in done.trace["sections"] if s["index"] >= 0]
    cited = ", ".join(str(len(s["cited_ids"])) for s in body)
    print(f"survey {done.thread_id}: {len(body)} sections (papers cited per section: {cited}); "
          f"{totals['output_tokens']} tokens generated, {totals['decode_tok_s']} tok/s of model time (prompt "
          f"processing included; --stats splits it); "
          f"this run {done.wall_s:.1f}s")
    for kind, path in paths.items():
        print(f"  {kind:8} {path}")
