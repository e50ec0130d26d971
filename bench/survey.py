"""`cpm bench survey`: wall time and tokens/s of one survey run on the default model (issue 10).

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
    p.add_argument("--device", default="cpu", help="engine device (default cpu; `auto` takes a GPU if present)")
    p.add_argument("--out", type=Path, help="also write the survey Markdown here (the trace goes in --json)")
    p.add_argument("--json", type=Path, help="write the results and the survey's trace here")
    return p.parse_args(argv)


def load_sample(samples: list[dict], label: str) -> None:
    samples.append({"at": label, "loadavg_1m": round(os.getloadavg()[0], 2)})


async def run_survey(args, model, retriever, settings, samples: list[dict]) -> dict:
    """Stream the survey to its end; the `done` event (markdown, trace, wall_s)."""
    from agents.survey.runner import stream_survey

    done: dict = {}
    with tempfile.TemporaryDirectory(prefix="cpm-bench-survey-") as tmp:
        async for event in stream_survey(args.topic, model=model, retriever=retriever,
                                         db_path=Path(tmp) / "checkpoints.sqlite", settings=settings):
            if event["event"] == "section_done":
                load_sample(samples, f"section {event['section']}")
                # One line per section: a CPU run is silent for minutes otherwise.
                print(f"section {event['section'] + 1}/{settings.sections} done in {event['seconds']:.0f} s "
                      f"({event['cited']} cited): {event['title']}", flush=True)
            elif event["event"] == "done":
                done = event
    return done


def summarize(done: dict, load_s: float, samples: list[dict]) -> dict:
    """The figures of one run: wall, tokens, decode tok/s (trace totals), end-to-end tok/s, load average."""
    totals = done["trace"]["totals"]
    body = [s for s in done["trace"]["sections"] if s["index"] >= 0]
    loads = [s["loadavg_1m"] for s in samples]
    return {
        "wall_s": round(done["wall_s"], 1), "model_load_s": round(load_s, 1),
        "sections": len(body), "cited_per_section": [len(s["cited_ids"]) for s in body],
        "calls": totals["calls"], "input_tokens": totals["input_tokens"], "output_tokens": totals["output_tokens"],
        "model_s": round(totals["model_s"], 1),
        # Output tokens over model seconds (prefill included), as the trace reports it.
        "decode_tok_s": totals["decode_tok_s"],
        "end_to_end_tok_s": round(totals["output_tokens"] / done["wall_s"], 2),
        "loadavg_1m_mean": round(sum(loads) / len(loads), 2), "loadavg_1m_max": max(loads),
        "loadavg_samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    """Run one survey and print its figures (and JSON with --json)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from agents.chat import make_chat_model
    from agents.survey.configuration import Configuration
    from retrieval import Index

    args = parse_args(argv)
    settings = Configuration(sections=args.sections, words_per_section=args.words_per_section,
                             sources_per_section=args.sources, min_citations=min(3, args.sources),
                             queries_per_section=args.queries, write_mode=args.write_mode)
    retriever = Index.open(args.index)
    samples: list[dict] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_sample(samples, "start")
    start = time.perf_counter()
    model = make_chat_model(backend="engine", model=args.model, device=args.device)
    load_s = time.perf_counter() - start
    done = asyncio.run(run_survey(args, model, retriever, settings, samples))
    load_sample(samples, "end")
    result = {"topic": args.topic, "index": str(args.index), "documents": len(retriever),
              "model": args.model or "default", "device": args.device, "torch_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "settings": settings.model_dump(),
              "started": started,
              **summarize(done, load_s, samples)}

    table = Table("wall s", "model load s", "sections", "calls", "tokens in", "tokens out", "model s",
                  "decode tok/s", "end-to-end tok/s", "load avg (mean/max)",
                  title=f"survey: {args.sections} sections x {args.sources} papers x {args.words_per_section} words, "
                        f"{result['documents']:,}-paper index, {args.device}, {result['torch_threads']} threads")
    r = result
    table.add_row(f"{r['wall_s']:.1f}", f"{r['model_load_s']:.1f}", str(r["sections"]), str(r["calls"]),
                  f"{r['input_tokens']:,}", f"{r['output_tokens']:,}", f"{r['model_s']:.1f}",
                  f"{r['decode_tok_s']}", f"{r['end_to_end_tok_s']}",
                  f"{r['loadavg_1m_mean']}/{r['loadavg_1m_max']}")
    console = Console()
    if not console.is_terminal:
        console.width = 160  # a log file gets the whole table rather than wrapped cells
    console.print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(done["markdown"])
    if args.json:
        args.json.write_text(json.dumps({**result, "trace": done["trace"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
