"""`cpm bench survey`: wall time and tokens/s of a survey run on the default model (issues 10, 22, 23).

`--compare parallel` writes the same survey twice in one run, sections one at a time and then `--parallel` at
once (the engine's scheduler batches them); `--compare prefix-cache` writes it with the prefix cache off and
then on. Each run gets a freshly loaded engine, so no run reuses another's cached blocks.

It runs the graph `cpm survey` runs (`agents.survey.runner.stream_survey`), on a fresh thread in a temporary
checkpoint database, so nothing resumes from an earlier run and out/ is untouched unless --out is given.
Model load is timed apart from the survey; the load average is sampled at the start, after every section and
at the end, because on a shared machine it moves the figures several-fold.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

DEFAULT_TOPIC = "Efficient inference for on-device large language models"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cpm bench survey", description=__doc__)
    p.add_argument("--index", type=Path, required=True, help="index directory built with `cpm index build`")
    p.add_argument("--topic", default=DEFAULT_TOPIC)
    p.add_argument("--sections", type=int, default=6, help="body sections (default 6)")
    p.add_argument("--words-per-section", type=int, default=120, help="as `cpm survey` (default 120)")
    p.add_argument("--sources", type=int, default=4, help="papers written up per section, as `cpm survey` (default 4)")
    p.add_argument("--queries", type=int, default=1, help="model-written queries per section, as `cpm survey`")
    p.add_argument("--write-mode", choices=["per_source", "section"], default="per_source")
    p.add_argument("--model", default=None, help="model alias or path (default: the engine's default model)")
    p.add_argument("--parallel", type=int, default=4, help="sections written at once (default 4)")
    p.add_argument("--compare", choices=["none", "parallel", "prefix-cache"], default="none",
                   help="two runs back to back: sections one at a time vs --parallel, or prefix cache off vs on")
    p.add_argument("--device", default="cpu", help="engine device (default cpu; `auto` takes a GPU if present)")
    p.add_argument("--out", type=Path, help="also write the survey Markdown here (the trace goes in --json)")
    p.add_argument("--json", type=Path, help="write the results and the survey's trace here")
    return p.parse_args(argv)


def load_sample(samples: list[dict], label: str) -> None:
    samples.append({"at": label, "loadavg_1m": round(os.getloadavg()[0], 2)})


async def run_survey(args, model, retriever, settings, samples: list[dict]):
    """Stream the survey to its end; its `SurveyDone` event (markdown, trace, wall_s)."""
    from agents.events import SectionDone, SurveyDone
    from agents.survey.runner import stream_survey

    done = None
    with tempfile.TemporaryDirectory(prefix="cpm-bench-survey-") as tmp:
        async for event in stream_survey(args.topic, model=model, retriever=retriever,
                                         db_path=Path(tmp) / "checkpoints.sqlite", settings=settings):
            if isinstance(event, SectionDone):
                load_sample(samples, f"section {event.section}")
                # One line per section: a CPU run is silent for minutes otherwise.
                print(f"section {event.section + 1}/{settings.sections} done in {event.seconds:.0f} s "
                      f"({event.cited} cited): {event.title}", flush=True)
            elif isinstance(event, SurveyDone):
                done = event
    return done


def summarize(done, load_s: float, samples: list[dict]) -> dict:
    """The figures of one run: wall, tokens, decode tok/s (trace totals), end-to-end tok/s, load average."""
    totals = done.trace["totals"]
    body = [s for s in done.trace["sections"] if s["index"] >= 0]
    loads = [s["loadavg_1m"] for s in samples]
    return {
        "wall_s": round(done.wall_s, 1), "model_load_s": round(load_s, 1),
        "sections": len(body), "cited_per_section": [len(s["cited_ids"]) for s in body],
        "calls": totals["calls"], "input_tokens": totals["input_tokens"], "output_tokens": totals["output_tokens"],
        "model_s": round(totals["model_s"], 1),
        # Output tokens over model seconds (prefill included), as the trace reports it.
        "decode_tok_s": totals["decode_tok_s"],
        "end_to_end_tok_s": round(totals["output_tokens"] / done.wall_s, 2),
        "loadavg_1m_mean": round(sum(loads) / len(loads), 2), "loadavg_1m_max": max(loads),
        "loadavg_samples": samples,
    }


def runs_of(args) -> list[tuple[str, int, bool]]:
    """(label, max_parallel, prefix cache on) for each run the options ask for."""
    if args.compare == "parallel":
        return [("sequential", 1, True), (f"parallel {args.parallel}", args.parallel, True)]
    if args.compare == "prefix-cache":
        return [("prefix cache off", args.parallel, False), ("prefix cache on", args.parallel, True)]
    return [(f"parallel {args.parallel}", args.parallel, True)]


def settings_for(args, parallel: int):
    from agents.survey.configuration import Configuration

    return Configuration(sections=args.sections, words_per_section=args.words_per_section,
                         sources_per_section=args.sources, min_citations=min(3, args.sources),
                         queries_per_section=args.queries, write_mode=args.write_mode, max_parallel=parallel)


def one_run(args, retriever, label: str, settings, prefix_cache: bool) -> tuple[dict, dict]:
    """Load a fresh engine and write the survey; its figures and its `done` event."""
    from agents.chat import make_chat_model

    samples: list[dict] = []
    load_sample(samples, "start")
    os.environ["CPM_PREFIX_CACHE"] = "1" if prefix_cache else "0"  # read by Engine.load
    start = time.perf_counter()
    model = make_chat_model(backend="engine", model=args.model, device=args.device)
    load_s = time.perf_counter() - start
    print(f"== {label}", flush=True)
    done = asyncio.run(run_survey(args, model, retriever, settings, samples))
    load_sample(samples, "end")
    engine = model.engine  # bench survey always loads the embedded engine
    stats = engine.stats()
    engine.close()  # its loop thread; the next run loads a fresh engine
    figures = {"run": label, "max_parallel": settings.max_parallel, "prefix_cache": prefix_cache,
               "settings": settings.model_dump(), **summarize(done, load_s, samples),
               "prompt_tokens": stats.prompt_tokens, "cached_tokens": stats.cached_tokens,
               "preemptions": stats.preemptions}
    return figures, done


def main(argv: list[str] | None = None) -> int:
    """Run the survey once per configuration and print their figures side by side (and JSON with --json)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from retrieval import Index

    args = parse_args(argv)
    retriever = Index.open(args.index)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    plan = [(label, settings_for(args, parallel), cache) for label, parallel, cache in runs_of(args)]  # bad options fail here
    runs, dones = [], []
    saved = os.environ.get("CPM_PREFIX_CACHE")
    try:
        for label, settings, cache in plan:
            figures, done = one_run(args, retriever, label, settings, cache)
            runs.append(figures)
            dones.append(done)
    finally:
        if saved is None:
            os.environ.pop("CPM_PREFIX_CACHE", None)
        else:
            os.environ["CPM_PREFIX_CACHE"] = saved
    result = {"topic": args.topic, "index": str(args.index), "documents": len(retriever),
              "model": args.model or "default", "device": args.device, "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "started": started, "compare": args.compare, "runs": runs}
    if len(runs) == 2:
        result["speedup"] = round(runs[0]["wall_s"] / runs[1]["wall_s"], 2)
        # greedy decoding: the same text both times unless the configuration changes what a section sees
        result["same_markdown"] = dones[0].markdown == dones[1].markdown

    table = Table("run", "wall s", "model load s", "sections", "calls", "tokens in", "cached", "tokens out",
                  "model s", "end-to-end tok/s", "load avg (mean/max)",
                  title=f"survey: {args.sections} sections x {args.sources} papers x {args.words_per_section} words, "
                        f"{result['documents']:,}-paper index, {args.device}, {result['torch_threads']} threads")
    for r in runs:
        table.add_row(r["run"], f"{r['wall_s']:.1f}", f"{r['model_load_s']:.1f}", str(r["sections"]),
                      str(r["calls"]), f"{r['input_tokens']:,}", f"{r['cached_tokens']:,}",
                      f"{r['output_tokens']:,}", f"{r['model_s']:.1f}", f"{r['end_to_end_tok_s']}",
                      f"{r['loadavg_1m_mean']}/{r['loadavg_1m_max']}")
    console = Console()
    if not console.is_terminal:
        console.width = 160  # a log file gets the whole table rather than wrapped cells
    console.print(table)
    if "speedup" in result:
        console.print(f"{runs[0]['run']} / {runs[1]['run']} wall: {result['speedup']}x; "
                      f"same survey text: {result['same_markdown']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(dones[-1].markdown)
    if args.json:
        args.json.write_text(json.dumps({**result, "traces": [d.trace for d in dones]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
