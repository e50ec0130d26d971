"""`cpm eval bfcl`: BFCL-style function-calling evaluation (AST checking, MiniCPM4-MCP metrics).

Two modes: `--score RESULTS.jsonl` scores existing outputs in BFCL's result format; without it the chat
model generates outputs for the chosen categories (resumable JSON lines under --out), then they are scored.
Generation runs on the serving set-up (`cpm serve`'s loader and quantisation, the grammar when --constrained,
the --spec drafter) and the report records it under run.serving. Generation shows a progress bar with an ETA;
Ctrl-C keeps the finished cases and prints the command that resumes. `--compare-with TREE` is the benchmark
(agents/bfcl/compare.py).
"""
from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bfcl", help="BFCL function-calling accuracy (AST rules) of a model or a results file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="BFCL data folder: BFCL_v*_<category>.json and possible_answer/ (e.g. ../shared/data/bfcl)")
    p.add_argument("--score", metavar="RESULTS.jsonl",
                   help="score these outputs (JSON lines with id and result) instead of generating")
    p.add_argument("--categories", nargs="+", metavar="CAT",
                   help="categories to run (default: simple_python multiple parallel parallel_multiple irrelevance)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N cases of each category")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--constrained", dest="constrained", action="store_true", default=None,
                      help="BFCL's FC mode: tools bound, each call grammar-constrained to its tool's schema")
    mode.add_argument("--free", dest="constrained", action="store_false", help="BFCL's prompting mode (default): functions in the system prompt, no grammar")
    p.add_argument("--tool-choice", choices=["auto", "required"],
                   help="FC mode (implies --constrained): auto = the model decides between a call and an answer; "
                        "required = categories with answers must call (irrelevance stays auto); default auto")
    p.add_argument("--compare-with", metavar="TREE",
                   help="benchmark: generate the same cases with the code in TREE too (a checkout of an earlier "
                        "release, e.g. `git archive 26d7dad`), in auto and required modes, and print one table")
    p.add_argument("--out", metavar="DIR", help="write bfcl_report.json here (generation: also bfcl_results.jsonl;"
                                                " default ./bfcl_run)")
    p.add_argument("--backend", choices=["engine", "openai"], help="chat backend (default: $CPM_BACKEND or engine)")
    p.add_argument("--model", help="model alias/path (engine) or served model name (openai); default smollm2-135m")
    from agents.chat.factory import BaseUrlAction

    p.add_argument("--base-url", action=BaseUrlAction, help="OpenAI-compatible server URL for --backend openai; "
                   "repeat it (or a comma list) for several servers (env CPM_BASE_URL)")
    p.add_argument("--api-key", help="API key for the server (env CPM_API_KEY)")
    p.add_argument("--max-tokens", type=int, default=256, help="generation budget per case (default 256)")
    p.add_argument("--spec", default="none", metavar="{none,prompt-lookup,eagle:DIR}",
                   help="speculative drafter of the in-process engine, as in `cpm generate --spec` (default none)")
    p.add_argument("--device", default="auto", help="in-process engine device: auto, cpu or cuda (default auto)")
    p.add_argument("--names", choices=["either", "exact", "underscore"], default="either",
                   help="function-name matching: exact, BFCL's dot->underscore form, or either (default)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agents.errors import AgentError

    if args.limit is not None and args.limit < 1:
        raise AgentError(f"--limit must be at least 1, got {args.limit}")
    if args.tool_choice and args.constrained is False:
        raise AgentError("--tool-choice binds tools (FC mode); it does not go with --free")
    args.constrained = bool(args.constrained or args.tool_choice)
    if args.compare_with:
        from agents.bfcl.compare import run_compare

        return run_compare(args)
    if args.score:
        from agents.bfcl.score import score_file

        if args.categories or args.limit:
            raise AgentError("--categories/--limit select cases to generate; with --score every record is scored")
        report = score_file(Path(args.score), Path(args.data), args.names)
        title = f"BFCL (AST) — {Path(args.score).name}"
    else:
        from agents.bfcl.generate import GenerationConfig, generate_and_score

        out = Path(args.out or "bfcl_run")
        args.out = str(out)
        config = GenerationConfig(backend=args.backend, model=args.model, base_url=args.base_url,
                                  api_key=args.api_key, constrained=args.constrained,
                                  tool_choice=args.tool_choice or "auto", max_tokens=args.max_tokens,
                                  spec=args.spec, device=args.device)
        _check_spec(args.spec)
        try:
            with CaseProgress() as progress:
                report = generate_and_score(Path(args.data), out, config, args.categories, args.limit, args.names,
                                            progress=progress.update)
        except KeyboardInterrupt:
            import sys

            print(f"\nfinished cases are kept in {out}: `{resume_command(args)}` continues", file=sys.stderr)
            raise
        title = f"BFCL (AST) — {config.describe()}"
    _show(report, args, title)
    return 0


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues this generation run (same cases and settings, same --out)."""
    import shlex

    parts = ["cpm", "eval", "bfcl", "--data", args.data, "--out", args.out]
    if args.categories:
        parts += ["--categories", *args.categories]
    for flag, value in (("--limit", args.limit), ("--backend", args.backend), ("--model", args.model),
                        ("--base-url", args.base_url), ("--names", None if args.names == "either" else args.names),
                        ("--max-tokens", None if args.max_tokens == 256 else args.max_tokens),
                        ("--spec", None if args.spec == "none" else args.spec),
                        ("--device", None if args.device == "auto" else args.device)):
        if value is not None:
            parts += [flag, str(value)]
    if args.constrained:
        parts += ["--tool-choice", args.tool_choice or "auto"]
    return shlex.join(parts)


def _check_spec(spec: str) -> None:
    """A bad --spec is refused before the model loads."""
    from engine import SamplingParams

    SamplingParams(spec=spec).validate()


def _show(report: dict, args: argparse.Namespace, title: str) -> None:
    import json
    from pathlib import Path

    from agents.bfcl.report import summary_table, write_report

    if args.out:
        path = write_report(report, Path(args.out))
    errors = report.get("errors") or []
    if args.json:
        print(json.dumps({**report["summary"], "errors": errors} if errors else report["summary"], indent=2))
        return
    from tui.console import output_console

    console = output_console()
    console.print(summary_table(report["summary"], title))
    for e in errors[:10]:
        console.print(f"line {e['line']} not scored: {e['error']}", highlight=False)
    if len(errors) > 10:
        console.print(f"... {len(errors) - 10} more unreadable lines (all in the report)")
    if args.out:
        console.print(f"report: {path}")


class CaseProgress:
    """`with CaseProgress() as p: ... p.update(done, total, case_id)`; `update(0, total, "")` starts the bar."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.task = None
        self.started = 0.0

    def __enter__(self) -> "CaseProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, done: int, total: int, case_id: str) -> None:
        if self.task is None:
            self._start(total)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, case=case_id)
        elif done:
            self.stream.write(f"[{done}/{total}] {case_id}  eta {_eta(self.started, done, total)}\n")
            self.stream.flush()

    def _start(self, total: int) -> None:
        self.started = time.monotonic()
        self.task = 0
        if not self.stream.isatty():
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn("cases"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[case]}"),
                            console=Console(file=self.stream), transient=False)
        self.bar.start()
        self.task = self.bar.add_task("generate", total=total, case="")


def _eta(started: float, done: int, total: int) -> str:
    """Remaining time from the mean time per case so far, as m:ss."""
    left = (time.monotonic() - started) / done * (total - done)
    return f"{int(left // 60)}:{int(left % 60):02d}"
