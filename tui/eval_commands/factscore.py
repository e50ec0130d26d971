"""`cpm eval factscore SURVEY.md --index DIR`: FactScore of a Markdown survey against an index.

Claims are the survey's sentences (or atomic claims extracted by the chat model, with --extract model), evidence
is the cited papers' passages and records first and then the index's top-k hits, and each claim is judged
supported or not; the default judge needs no language model (MiniLM similarity + exact number/negation checks). The JSON
report (--out) holds every claim with its evidence and verdict; a cache beside it makes a re-run resume.
"""
from __future__ import annotations

import argparse
import sys
import time

from survey.factscore.choose import JUDGES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("factscore", help="FactScore of a Markdown survey: supported claims, citation precision/recall",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("survey", metavar="SURVEY.md", help="Markdown with [n] citations and a ## References list")
    p.add_argument("--index", required=True, metavar="DIR", help="retrieval index folder (cpm index build)")
    p.add_argument("--out", metavar="REPORT.json", help="JSON report path (default: SURVEY.factscore.json)")
    p.add_argument("--cache", metavar="FILE", help="per-claim SQLite cache (default: REPORT.cache.sqlite)")
    p.add_argument("--judge", choices=list(JUDGES), default="auto",
                   help="embedding (= auto, the default, chosen by measurement: docs/factscore.md): MiniLM "
                        "similarity to a sentence of the evidence plus exact number and negation checks, no "
                        "language model; likelihood: token log-probs given the evidence (engine only); chat: "
                        "the model answers supported / not supported (constrained; for large models); lexical: "
                        "word/number/negation match")
    p.add_argument("--scorer", choices=["auto", "engine", "hf"], default="auto",
                   help="likelihood judge: token log-probs from the engine (one decode step per token) or from "
                        "transformers (one forward pass; faster on CPU); auto: hf on CPU, engine on GPU")
    p.add_argument("--threshold", type=float, help="embedding judge: cosine to count as supported (default 0.78); "
                                                   "likelihood judge: worst-token log-prob (default -5.0)")
    p.add_argument("--extract", choices=["model", "sentence"], default="sentence",
                   help="one claim per sentence (default: the 135M default model's extractions are rejected as "
                        "invented for nearly every sentence, at ~3 s each) or atomic claims by the chat model "
                        "(for larger models)")
    p.add_argument("--k", type=int, default=3, help="index hits per claim besides the cited papers (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed for the model calls; part of the cache key")
    p.add_argument("--gamma", type=int, default=10, help="length-penalty threshold, as in FActScore (default 10)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    from agents.chat.factory import add_backend_arguments

    add_backend_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from survey.errors import SurveyError
    from survey.factscore import FactScoreConfig, evaluate
    from survey.factscore.cache import ClaimCache

    survey = Path(args.survey)
    text = survey.read_text(encoding="utf-8", errors="replace")  # FileNotFoundError names the path
    if args.k < 0 or args.gamma < 0:
        raise SurveyError("--k and --gamma must be 0 or more")
    out = Path(args.out or survey.with_suffix(".factscore.json"))
    index = _open_index(args.index)
    llm, judge, model_name = _build_models(args)
    config = FactScoreConfig(seed=args.seed, k=args.k, gamma=args.gamma, model_name=model_name,
                             extract_with_model=args.extract == "model")
    cache = ClaimCache(args.cache or out.with_suffix(".cache.sqlite"))
    try:
        with _progress_bar() as progress:
            report = evaluate(text, llm=llm, index=index, judge=judge, config=config, cache=cache,
                              progress=progress)
    finally:
        cache.close()
    report["survey"] = str(survey)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    if args.json:
        print(json.dumps({k: report[k] for k in ("summary", "per_section", "problems")}, indent=2))
    else:
        _print_summary(report, out)
    return 0


def _open_index(directory: str):
    from retrieval import Index

    return Index.open(directory)


def _build_models(args: argparse.Namespace):
    """(chat model, judge, model name); the likelihood judge shares the chat model's in-process engine."""
    from survey.factscore.choose import choose_judge, needs_model

    if not needs_model(args.judge) and args.extract == "sentence":  # no language model at all: nothing to load
        return None, choose_judge(args.judge, None, "none", args.scorer, args.threshold), "none"
    from agents.chat.factory import chat_model_from_args

    # greedy and seeded: the same survey gives the same claims and verdicts (and cache keys)
    llm = chat_model_from_args(args, temperature=0.0, seed=args.seed)
    name = str(getattr(llm, "model_name", None) or getattr(llm, "model", None) or args.model or "default")
    return llm, choose_judge(args.judge, llm, name, args.scorer, args.threshold), name


class _progress_bar:
    """A rich progress bar with an ETA on stderr, fed by `evaluate`'s (done, total, section) callback."""

    def __enter__(self):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._console = Console(stderr=True)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                             console=self._console, transient=False)
        self._bar.start()
        self._task = self._bar.add_task("sentences", total=None)
        self._said = -1
        self._start = time.monotonic()
        return self

    def __call__(self, done: int, total: int, section: str) -> None:
        self._bar.update(self._task, completed=done, total=total, description=section[:40])
        if not self._console.is_terminal and done != self._said:  # a log or pipe gets no live bar: a line each
            self._said = done
            elapsed = time.monotonic() - self._start
            eta = f", eta {elapsed / done * (total - done):.0f} s" if done else ""
            print(f"factscore: {done}/{total} sentences scored in {elapsed:.0f} s{eta} ({section[:60]})",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        self._bar.stop()


def _fmt(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _print_summary(report: dict, out) -> None:
    from rich.table import Table

    from tui.console import output_console

    table = Table("section", "claims", "supported", "FactScore", "w/ length penalty", "cit. precision",
                  "cit. recall", title=f"FactScore ({report['judge']})")
    for row in report["per_section"] + [{"section": "[b]overall[/]", **report["summary"]}]:
        table.add_row(row["section"], str(row["claims"]), str(row["supported"]), _fmt(row["factscore"]),
                      _fmt(row["factscore_length_penalized"]), _fmt(row["citation_precision"]),
                      _fmt(row["citation_recall"]))
    console = output_console()  # a pipe (make demo's log) gets the table's natural width, not 80 columns
    console.print(table)
    s = report["summary"]
    console.print(f"claims by the model: {s['claims_by_model']}/{s['claims']} (others: sentence as claim); "
                  f"unparsable verdicts: {s['unparsable']}; cache hits: {report['cache_hits']}")
    for problem in report["problems"]:
        console.print(f"[yellow]problem:[/] {problem}")
    console.print(f"report: {out}")
