"""`cpm bench spec`: decode speed with and without speculative decoding, in one run on one engine.

    cpm bench spec --model smollm2-135m [--set chat|survey|all] [--draft DIR] [--spec auto] [--device cuda]
                   [--json-schema FILE] [--repeat 3] [--json]

For each prompt: plain greedy decoding, then each drafter (prompt lookup and auto always; eagle:DIR with
--draft), `--repeat` times in turn (plain, drafter, ..., plain, drafter, ...: a load change on a shared box
hits both alike) and the fastest of each (also the median of the back-to-back ratios, `paired_speedup`, the
ratio of CPU time per token, `cpu_speedup`, and plain
decoding on the speculative path's cache rows, `plain-rows`, which auto falls back to): decode tokens/s, the speed-up, mean accepted length (tokens per
verification pass, bonus included), the acceptance rate, and whether the tokens equal plain decoding's (they
must: speculation is lossless). Two prompt sets: `chat` (questions) and `survey` (copy-heavy: a section written
from quoted sources, built from the local arXiv records under --data, as the survey writer does). With an Eagle
head, also the draft step's cost with the full LM head vs the FR-Spec frequency-ranked one.
"""
from __future__ import annotations

import argparse
import json
import time

# Our own short texts: a free-form answer, and a quote-heavy one (the case prompt lookup is for).
PASSAGE = ("Speculative decoding lets a small draft model propose several tokens that the large target model "
           "then verifies in a single forward pass. Because verification accepts a drafted token only when the "
           "target would have produced it, the output is unchanged, while the number of sequential target passes "
           "drops. FR-Spec restricts the draft head's vocabulary to the most frequent tokens, which makes each "
           "draft step cheaper without changing what the target accepts.")
PROMPTS = [
    "Explain what a KV cache is in a short paragraph.",
    "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    f"Here is a passage:\n\n{PASSAGE}\n\nRepeat the passage's second and third sentences word for word, "
    "then explain them.",
    f"Summarize this text, quoting its key phrases exactly:\n\n{PASSAGE}",
]
CHAT = PROMPTS[:2] + ["What is a paper titled \"{title}\" likely about?"]  # {title}: a record's, from --data
# Survey-style: one section written from numbered sources, quoting them (what prompt lookup can copy from)
SURVEY = ("You are writing one section of a survey. Using only the sources below, write a paragraph that states "
          "what each paper does, quoting its key sentence exactly, and cite each as [n].\n\n{sources}")
ARXIV = "corpus/arxiv_llm_mini.jsonl"  # under --data


def prompt_sets(data: str, which: str, n: int) -> dict[str, list[str]]:
    """{set name: prompts}: chat questions, and survey sections from pairs of local arXiv records (+ PASSAGE)."""
    from pathlib import Path

    path = Path(data) / ARXIV
    if not path.is_file():
        raise SystemExit(f"cpm bench spec: {path} not found (pass --data, the folder with corpus/arxiv_llm_mini.jsonl)")
    recs = [json.loads(line) for line, _ in zip(path.open(), range(2 * n + 2))]
    clean = lambda t: " ".join(str(t).split())  # noqa: E731 (arXiv abstracts are hard-wrapped)
    sets = {"chat": [p.format(title=clean(recs[-1]["title"])) for p in CHAT][:n],
            "survey": ([SURVEY.format(sources=f"[1] {PASSAGE}")] + [
                SURVEY.format(sources=f"[1] {clean(a['title'])}. {clean(a['abstract'])}\n\n"
                                      f"[2] {clean(b['title'])}. {clean(b['abstract'])}")
                for a, b in zip(recs[0::2], recs[1::2])])[:n]}
    return sets if which == "all" else {which: sets[which]}


def _best_run(runs: list[dict]) -> dict:
    """The fastest of the repeats: on a shared box the slower ones measure the other tenants' load."""
    return max(runs, key=lambda r: r["decode_tok_s"])


def _paired(spec: list[dict], plain: list[dict]) -> float:
    """The median over repeats of spec / plain, each pair run back to back (a second estimate of the speed-up)."""
    ratios = sorted(s["decode_tok_s"] / p["decode_tok_s"] for s, p in zip(spec, plain) if p["decode_tok_s"])
    return round(ratios[len(ratios) // 2], 3) if ratios else 0.0


def _timed_rows(engine, text: str, params) -> dict:
    """Plain decoding on the speculative path (cache rows, one decode step at a time, nothing drafted): what
    auto's fallback costs when it never verifies, beside the engine's own plain path (the scheduler's pool)."""
    from engine.speculative import speculative_stream
    from engine.speculative.drafter import empty_draft
    from engine.speculative.prompt_lookup import PromptLookupDrafter

    class NoDraft(PromptLookupDrafter):
        def propose(self, params=None):
            return empty_draft()

    start, cpu = time.perf_counter(), time.process_time()
    res = list(speculative_stream(engine, engine._ids(text), params, NoDraft()))[-1].result
    return {"tokens": res.token_ids, "decode_tok_s": res.decode_tok_s, "wall_s": time.perf_counter() - start,
            "cpu_ms_per_token": _cpu_ms(cpu, res)}


def _median(xs: list) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def _step_speedup(run: dict) -> float | None:
    """auto against plain decoding inside one request, step by step: its tokens at the request's own mean plain
    step, over the time its steps took (plain steps + verifying steps + every lookup). Plain and speculative
    steps alternate milliseconds apart, so a load change on the box hits both alike (unlike whole runs)."""
    a = run.get("auto")
    if not a or not a["plain_steps"]:
        return None
    tokens = a["plain_steps"] + a["spec_tokens"]
    return round(tokens * (a["plain_s"] / a["plain_steps"]) / (a["plain_s"] + a["spec_s"] + run["draft_s"]), 3)


def _cpu_ms(cpu0: float, res) -> float:
    """This process's CPU time per generated token (prefill included): on a box shared with other jobs the wall
    clock measures their load as much as ours, CPU time mostly ours (a third estimate of the speed-up). It is
    biased against speculation on long prompts: plain requests reuse the prompt's cached prefix from the previous
    repeat (the scheduler's prefix cache), speculative ones prefill their cache row again."""
    return 1e3 * (time.process_time() - cpu0) / max(1, len(res.token_ids))


def _timed(engine, text: str, params) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    res = engine.generate(text, params)
    out = {"tokens": res.token_ids, "decode_tok_s": res.decode_tok_s, "wall_s": time.perf_counter() - start,
           "cpu_ms_per_token": _cpu_ms(cpu, res)}
    if res.spec is not None:
        out.update(res.spec.as_dict(), draft_s=res.spec.draft_s, verify_s=res.spec.verify_s)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cpm bench spec", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="engine dtype (default: the engine's)")
    p.add_argument("--draft", default=None, metavar="DIR", help="an Eagle/FR-Spec head folder (cpm spec train)")
    p.add_argument("--spec", action="append", default=None,
                   help="drafters to compare (repeatable; default: prompt-lookup and auto, plus eagle:DIR with --draft)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--set", dest="sets", default="all", choices=["chat", "survey", "all"], help="prompt sets")
    p.add_argument("--data", default="../shared/data", help="the local data folder (its corpus/arxiv_llm_mini.jsonl)")
    p.add_argument("--prompts", type=int, default=3, help="prompts per set")
    p.add_argument("--repeat", type=int, default=3, help="runs of each configuration per prompt (fastest reported)")
    p.add_argument("--prompts-file", default=None, metavar="FILE", help="chat prompts instead (JSONL of "
                   "{messages}, e.g. `cpm spec prompts --eval-out`); --prompts of them")
    p.add_argument("--max-seq-len", type=int, default=2048)
    p.add_argument("--json-schema", default=None, metavar="FILE", help="constrain every run (plain and "
                   "speculative) to this JSON schema: the speed of grammar + speculation together")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from engine import Engine, SamplingParams

    specs = args.spec or ["prompt-lookup", "auto"] + ([f"eagle:{args.draft}"] if args.draft else [])
    for s in specs:
        SamplingParams(spec=s).validate()
    import sys

    t0 = time.perf_counter()
    engine = Engine.load(args.model, device=args.device, dtype=args.dtype, max_seq_len=args.max_seq_len)
    t1 = time.perf_counter()
    from engine.speculative.graph import capture_all

    capture_all(engine)  # tree-verification graphs (CUDA) captured up front, not inside a timed run
    print(f"loaded in {t1 - t0:.1f} s, verify graphs captured in {time.perf_counter() - t1:.1f} s", file=sys.stderr,
          flush=True)
    grammar = _grammar(engine, args.json_schema)

    def params(**kw) -> SamplingParams:  # a fresh grammar matcher for every run
        return SamplingParams(logits_processors=[grammar()] if grammar else [], **kw)

    if args.prompts_file:
        from engine.speculative.distill import read_prompts

        chats = [("file", c) for c in read_prompts(args.prompts_file, args.prompts)]
    else:
        chats = [(name, [{"role": "user", "content": p}])
                 for name, ps in prompt_sets(args.data, args.sets, args.prompts).items() for p in ps]
    rows = []
    for i, (set_name, chat) in enumerate(chats):
        prompt = chat[-1]["content"]
        text = engine.apply_chat_template(chat)
        # warm-up: allocator, kernels, graph capture, the drafter's own first call; the first prompt's at full
        # length (a short one left plain decoding's first timed run at a tenth of its speed: shapes seen late)
        warm = args.new_tokens if i == 0 else 8
        for s in ["none"] + specs:
            engine.generate(text, params(max_tokens=warm, spec=s))
        runs: dict[str, list[dict]] = {s: [] for s in ["none", "plain-rows"] + specs}
        for _ in range(args.repeat):  # interleaved: plain and every drafter back to back, then again
            for s in runs:
                p = params(max_tokens=args.new_tokens, spec="none" if s == "plain-rows" else s)
                runs[s].append(_timed_rows(engine, text, p) if s == "plain-rows" else _timed(engine, text, p))
        base, rows_base = _best_run(runs["none"]), _best_run(runs["plain-rows"])
        row = {"set": set_name, "prompt": prompt[:48], "tokens": len(base["tokens"]),
               "plain_tok_s": round(base["decode_tok_s"], 1),
               "plain_ms_per_token": round(1e3 / base["decode_tok_s"], 3) if base["decode_tok_s"] else None,
               "plain_rows_tok_s": round(rows_base["decode_tok_s"], 1),
               "plain_tok_s_all": [round(x["decode_tok_s"], 1) for x in runs["none"]]}
        for s in specs:
            r = _best_run(runs[s])
            row[s] = {"tok_s": round(r["decode_tok_s"], 1), "tok_s_all": [round(x["decode_tok_s"], 1) for x in runs[s]],
                      "speedup": round(r["decode_tok_s"] / base["decode_tok_s"], 3) if base["decode_tok_s"] else None,
                      "paired_speedup": _paired(runs[s], runs["none"]),
                      # plain's CPU time per token over this drafter's, each the least of its repeats
                      "cpu_speedup": round(min(x["cpu_ms_per_token"] for x in runs["none"])
                                           / min(x["cpu_ms_per_token"] for x in runs[s]), 3),
                      "speedup_vs_rows": round(r["decode_tok_s"] / rows_base["decode_tok_s"], 3)
                      if rows_base["decode_tok_s"] else None,
                      "mean_accepted_length": r["mean_accepted_length"], "acceptance_rate": r["acceptance_rate"],
                      "draft_s": round(r["draft_s"], 4), "verify_s": round(r["verify_s"], 4),
                      # per verification step: what the speed-up is made of (tau x plain step / step cost)
                      "draft_ms_per_step": round(1e3 * r["draft_s"] / r["steps"], 3) if r["steps"] else None,
                      "verify_ms_per_step": round(1e3 * r["verify_s"] / r["steps"], 3) if r["steps"] else None,
                      "identical": all(x["tokens"] == base["tokens"] for x in runs[s]),
                      "first_difference": _first_difference(base["tokens"], r["tokens"])}
            if "auto" in r:  # what auto decided in the fastest run (its step telemetry, counts only)
                row[s]["auto"] = {k: r["auto"][k] for k in ("spec_steps", "plain_steps", "declined", "probes")}
                row[s]["step_speedup"] = _median([_step_speedup(x) for x in runs[s]])
        rows.append(row)
        if args.json:  # progress on stderr: a run cut short by a time limit still shows its finished prompts
            print(json.dumps({k: (v if not isinstance(v, dict) else {x: v[x] for x in ("tok_s", "speedup",
                  "paired_speedup", "cpu_speedup", "speedup_vs_rows", "mean_accepted_length", "identical")}
                  | ({"step_speedup": v["step_speedup"]} if isinstance(v, dict) and "step_speedup" in v else {}))
                  for k, v in row.items()}), file=sys.stderr, flush=True)
    report = {"model": args.model, "device": str(engine.device), "dtype": str(engine.dtype).replace("torch.", ""),
              "gpu": torch.cuda.get_device_name(0) if engine.device.type == "cuda" else None,
              "torch": torch.__version__, "new_tokens": args.new_tokens, "json_schema": args.json_schema,
              "prompts_file": args.prompts_file, "repeat": args.repeat, "rows": rows,
              "plain_mean_tok_s": round(sum(r["plain_tok_s"] for r in rows) / len(rows), 1),
              "summary": _summary(rows, specs)}
    eagle = next((s for s in specs if s.startswith("eagle:")), None)
    if eagle is not None:  # the drafter was started by the runs above; time one draft step both ways
        costs = engine.drafters[eagle].draft_costs(SamplingParams())
        report["eagle_draft_costs"] = {k: (round(v * 1e3, 4) if isinstance(v, float) else v) for k, v in costs.items()}
        report["eagle_draft_costs"]["unit"] = "ms (medians)"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, specs)
    return 0


def _grammar(engine, path: str | None):
    """A factory of fresh JSON-schema logits processors (xgrammar, as `cpm serve` uses), or None."""
    if path is None:
        return None
    from pathlib import Path

    from agents.chat.grammar import GrammarFactory

    schema = json.loads(Path(path).read_text())
    factory = GrammarFactory(engine.tokenizer, vocab_size=engine.config.vocab_size, stop_token_ids=sorted(engine.eos_ids))
    fmt = {"type": "json_schema", "json_schema": {"name": "bench", "schema": schema}}
    return lambda: factory.for_response_format(fmt)


def _first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (None when equal). On bf16 GPUs a verification pass over T tokens
    rounds differently from T single-token passes, so a near-tie can flip; on CPU fp32 runs are identical."""
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return n if n is not None or len(a) == len(b) else min(len(a), len(b))


def _summary(rows: list[dict], specs: list[str]) -> dict:
    """Per drafter: mean speed-up and mean accepted length over the prompts, whether every run matched, and per
    prompt set the mean and the lowest speed-up and the prompts where it won (>= 1.05x)."""
    out = {}
    for s in specs:
        runs = [r[s] for r in rows]
        mean = lambda key: round(sum(x[key] or 0 for x in runs) / len(runs), 3)  # noqa: E731
        out[s] = {"mean_speedup": mean("speedup"), "mean_paired_speedup": mean("paired_speedup"),
                  "mean_cpu_speedup": mean("cpu_speedup"),
                  "mean_speedup_vs_rows": mean("speedup_vs_rows"), "mean_tok_s": mean("tok_s"),
                  "draft_ms_per_step": mean("draft_ms_per_step"), "verify_ms_per_step": mean("verify_ms_per_step"),
                  "mean_accepted_length": round(sum(x["mean_accepted_length"] for x in runs) / len(runs), 3),
                  "all_identical": all(x["identical"] for x in runs), "sets": {}}
        for name in dict.fromkeys(r["set"] for r in rows):
            ups = [r[s]["speedup"] or 0 for r in rows if r["set"] == name]
            paired = [r[s]["paired_speedup"] for r in rows if r["set"] == name]
            out[s]["sets"][name] = {"mean_speedup": round(sum(ups) / len(ups), 3), "min_speedup": min(ups),
                                    "min_paired_speedup": min(paired),
                                    "min_cpu_speedup": min(r[s]["cpu_speedup"] for r in rows if r["set"] == name),
                                    "min_step_speedup": _lowest([r[s].get("step_speedup") for r in rows
                                                                        if r["set"] == name]),
                                    "wins": [r["prompt"] for r in rows if r["set"] == name and (r[s]["speedup"] or 0) >= 1.05]}
    return out


def _lowest(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return min(xs) if xs else None


def _print(report: dict, specs: list[str]) -> None:
    print(f"{report['model']} on {report['gpu'] or report['device']} ({report['dtype']}), "
          f"{report['new_tokens']} new tokens, greedy")
    for r in report["rows"]:
        cells = " | ".join(f"{s}: {r[s]['tok_s']} tok/s x{r[s]['speedup']} (paired x{r[s]['paired_speedup']}, "
                           f"CPU time x{r[s]['cpu_speedup']}) "
                           f"tau {r[s]['mean_accepted_length']}"
                           f"{'' if r[s]['identical'] else ' MISMATCH'}" for s in specs)
        print(f"[{r['set']}] plain {r['plain_tok_s']:>7} tok/s (rows {r['plain_rows_tok_s']}) | {cells} | {r['prompt']}")
    print(f"plain: mean {report['plain_mean_tok_s']} tok/s")
    for s, v in report["summary"].items():
        print(f"{s}: mean speed-up x{v['mean_speedup']}, mean accepted length {v['mean_accepted_length']}, "
              f"identical: {v['all_identical']}")
        for name, x in v["sets"].items():
            print(f"  {name}: mean x{x['mean_speedup']}, lowest x{x['min_speedup']} (paired x{x['min_paired_speedup']}, "
                  f"CPU time x{x['min_cpu_speedup']}, step by step x{x['min_step_speedup']}), "
                  f"wins on {len(x['wins'])} prompt(s)")
    if "eagle_draft_costs" in report:
        print("eagle draft step (ms):", json.dumps(report["eagle_draft_costs"]))


if __name__ == "__main__":
    raise SystemExit(main())
