"""`cpm eval bfcl`: BFCL-style function-calling evaluation (AST checking, MiniCPM4-MCP metrics).

Two modes: `--score RESULTS.jsonl` scores existing outputs in BFCL's result format; without it the chat
model generates outputs for the chosen categories (resumable JSON lines under --out), then they are scored.
Generation runs on the serving set-up (`cpm serve`'s loader and quantisation, the grammar when --constrained,
the --spec drafter) and the report records it under run.serving.
"""
from __future__ import annotations

import argparse


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
    mode.add_argument("--constrained", dest="constrained", action="store_true", default=False,
                      help="BFCL's FC mode: tools bound, each call grammar-constrained to its tool's schema")
    mode.add_argument("--free", dest="constrained", action="store_false", help="BFCL's prompting mode (default): functions in the system prompt, no grammar")
    p.add_argument("--out", metavar="DIR", help="write bfcl_report.json here (generation: also bfcl_results.jsonl;"
                                                " default ./bfcl_run)")
    p.add_argument("--backend", choices=["engine", "openai"], help="chat backend (default: $CPM_BACKEND or engine)")
    p.add_argument("--model", help="model alias/path (engine) or served model name (openai); default smollm2-135m")
    p.add_argument("--base-url", help="OpenAI-compatible server URL for --backend openai (env CPM_BASE_URL)")
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
    if args.score:
        from agents.bfcl.score import score_file

        if args.categories or args.limit:
            raise AgentError("--categories/--limit select cases to generate; with --score every record is scored")
        report = score_file(Path(args.score), Path(args.data), args.names)
        title = f"BFCL (AST) — {Path(args.score).name}"
    else:
        from agents.bfcl.generate import GenerationConfig, generate_and_score

        out = Path(args.out or "bfcl_run")
        config = GenerationConfig(backend=args.backend, model=args.model, base_url=args.base_url,
                                  api_key=args.api_key, constrained=args.constrained, max_tokens=args.max_tokens,
                                  spec=args.spec, device=args.device)
        _check_spec(args.spec)
        report = generate_and_score(Path(args.data), out, config, args.categories, args.limit, args.names,
                                    progress=_progress)
        args.out = str(out)
        title = f"BFCL (AST) — {config.describe()}"
    _show(report, args, title)
    return 0


def _check_spec(spec: str) -> None:
    """A bad --spec is refused before the model loads."""
    from engine import SamplingParams

    SamplingParams(spec=spec).validate()


def _progress(done: int, total: int, case_id: str) -> None:
    import sys

    print(f"\r[{done}/{total}] {case_id}   ", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _show(report: dict, args: argparse.Namespace, title: str) -> None:
    import json
    from pathlib import Path

    from agents.bfcl.report import summary_table, write_report

    if args.out:
        path = write_report(report, Path(args.out))
    if args.json:
        print(json.dumps(report["summary"], indent=2))
        return
    from rich.console import Console

    console = Console()
    console.print(summary_table(report["summary"], title))
    if args.out:
        console.print(f"report: {path}")
