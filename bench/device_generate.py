"""`cpm bench device_generate`: decode speed of a real checkpoint on one device, CUDA-graph decode beside the same
engine run eagerly (kernels, no graph), the plain-PyTorch eager path and the CPU engine, all in one run, and
whether their greedy tokens agree (the GPU path must not change what the model says).

    cpm bench device_generate --model smollm2-135m --device cuda --new-tokens 128 --json

On a GPU host without the model installed, pass the .gguf path as --model (the GGUF is 98 MB: the device
tool carries it in two parts, see /work/shared/tools/gpu-model-parts).
"""
from __future__ import annotations

import argparse
import json
import time

PROMPTS = ["Explain what a KV cache is in two sentences.", "Write a haiku about the sea.",
           "List three uses of speculative decoding.", "What is the capital of France?"]


def _run(engine, text: str, new_tokens: int) -> dict:
    """Engine.generate (the full product path: Sampler, detokenizer, stop checks), after a warm-up."""
    from engine import SamplingParams

    engine.generate(text, SamplingParams(max_tokens=8))  # warm-up (allocator, kernels, autotune, graph capture)
    start = time.perf_counter()
    res = engine.generate(text, SamplingParams(max_tokens=new_tokens))
    wall = time.perf_counter() - start
    return {"tokens": res.token_ids, "decode_tok_s": res.decode_tok_s, "wall_s": wall,
            "prompt_tokens": res.prompt_tokens, "finish": res.finish_reason}


def _greedy_loop(engine, text: str, new_tokens: int) -> float:
    """Runner.decode_greedy in a bare loop (argmax on the device, no sampler or detokenizer): decode tok/s."""
    import torch

    ids = engine._ids(text)
    with torch.inference_mode():
        tok = int(engine.runner.prefill(ids).argmax(-1))
        engine.runner.decode_greedy(tok, len(ids))  # warm (capture) at this position; rewritten below
        torch.cuda.synchronize()
        start = time.perf_counter()
        for pos in range(len(ids), len(ids) + new_tokens - 1):
            tok = engine.runner.decode_greedy(tok, pos)
        return (new_tokens - 1) / (time.perf_counter() - start)


def _profile(engine, text: str, steps: int = 16) -> dict:
    """Kernels of `steps` graph-replayed decode steps (CUPTI traces the kernels inside a graph): count a step and
    device time, the largest first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    ids = engine._ids(text)
    with torch.inference_mode():
        tok = int(engine.runner.prefill(ids).argmax(-1))
        tok = engine.runner.decode_greedy(tok, len(ids))
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for pos in range(len(ids) + 1, len(ids) + 1 + steps):
                tok = engine.runner.decode_greedy(tok, pos)
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0 and e.key.lower() not in ("cudagraphlaunch",):
            rows.append({"kernel": e.key[:90], "per_step": round(e.count / steps, 2), "us_per_step": round(t / steps, 1)})
    rows.sort(key=lambda r: -r["us_per_step"])
    return {"kernels_per_step": round(sum(r["per_step"] for r in rows), 1),
            "kernel_us_per_step": round(sum(r["us_per_step"] for r in rows), 1), "top": rows[:24]}


def _first_difference(a: list[int], b: list[int]) -> int | None:
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return n if n is not None or len(a) == len(b) else min(len(a), len(b))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cpm bench device_generate", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cuda")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--dtype", default=None, help="device dtype (default: the engine's, bfloat16 on CUDA)")
    p.add_argument("--no-plain", action="store_true", help="skip the plain-PyTorch eager run (slow)")
    p.add_argument("--profile", action="store_true", help="also profile the graph decode step's kernels (CUDA)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from engine import Engine, ops

    dev = Engine.load(args.model, device=args.device, dtype=args.dtype)
    cpu = Engine.load(args.model, device="cpu", dtype=torch.float32)
    cuda = dev.device.type == "cuda"
    rows = []
    for prompt in PROMPTS:
        text = dev.apply_chat_template([{"role": "user", "content": prompt}])
        row = {"prompt": prompt}
        dev.runner.use_graphs = True
        g = _run(dev, text, args.new_tokens)
        row["graph_tok_s"] = round(g["decode_tok_s"], 1)
        if cuda:
            row["graph_greedy_loop_tok_s"] = round(_greedy_loop(dev, text, args.new_tokens), 1)
        dev.runner.use_graphs = False
        e = _run(dev, text, args.new_tokens)
        row["eager_kernels_tok_s"] = round(e["decode_tok_s"], 1)
        if not args.no_plain:
            ops.KERNELS = False
            pl = _run(dev, text, args.new_tokens)
            ops.KERNELS = True
            row["eager_plain_tok_s"] = round(pl["decode_tok_s"], 1)
            row["plain_first_difference"] = _first_difference(g["tokens"], pl["tokens"])
        dev.runner.use_graphs = True
        c = _run(cpu, cpu.apply_chat_template([{"role": "user", "content": prompt}]), args.new_tokens)
        row["cpu_tok_s"] = round(c["decode_tok_s"], 1)
        row["cpu_first_difference"] = _first_difference(g["tokens"], c["tokens"])
        row["eager_first_difference"] = _first_difference(g["tokens"], e["tokens"])
        row["tokens"] = len(g["tokens"])
        rows.append(row)
    report = {"model": args.model, "device": args.device, "dtype": args.dtype or "default",
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "torch": torch.__version__, "rows": rows}
    if args.profile and cuda:
        report["profile"] = _profile(dev, dev.apply_chat_template([{"role": "user", "content": PROMPTS[0]}]))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in rows:
            print(f"graph {r['graph_tok_s']:>8} | eager {r['eager_kernels_tok_s']:>7} | "
                  f"plain {r.get('eager_plain_tok_s', '-'):>6} | cpu {r['cpu_tok_s']:>6} tok/s | first difference "
                  f"vs cpu {r['cpu_first_difference']}, vs eager {r['eager_first_difference']} | {r['prompt'][:30]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
