"""`cpm bench device_generate`: decode speed of a real checkpoint on one device beside the CPU engine in the
same run, and whether their greedy tokens agree (the GPU path must not change what the model says).

    cpm bench device_generate --model smollm2-135m --device cuda --new-tokens 128 --json
"""
from __future__ import annotations

import argparse
import json
import time

PROMPTS = ["Explain what a KV cache is in two sentences.", "Write a haiku about the sea.",
           "List three uses of speculative decoding.", "What is the capital of France?"]


def _run(engine, prompt: str, new_tokens: int) -> dict:
    from engine import SamplingParams

    text = engine.apply_chat_template([{"role": "user", "content": prompt}])
    engine.generate(text, SamplingParams(max_tokens=8))   # warm-up (allocator, kernels, autotune)
    start = time.perf_counter()
    res = engine.generate(text, SamplingParams(max_tokens=new_tokens))
    wall = time.perf_counter() - start
    return {"tokens": res.token_ids, "decode_tok_s": res.decode_tok_s, "wall_s": wall,
            "prompt_tokens": res.prompt_tokens, "finish": res.finish_reason}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cpm bench device_generate", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cuda")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--dtype", default=None, help="device dtype (default: the engine's, bfloat16 on CUDA)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from engine import Engine

    dev = Engine.load(args.model, device=args.device, dtype=args.dtype)
    cpu = Engine.load(args.model, device="cpu", dtype=torch.float32)
    rows = []
    for prompt in PROMPTS:
        a, b = _run(dev, prompt, args.new_tokens), _run(cpu, prompt, args.new_tokens)
        same = next((i for i, (x, y) in enumerate(zip(a["tokens"], b["tokens"])) if x != y), None)
        rows.append({"prompt": prompt, "device_tok_s": round(a["decode_tok_s"], 1),
                     "cpu_tok_s": round(b["decode_tok_s"], 1), "first_difference": same,
                     "device_tokens": len(a["tokens"]), "cpu_tokens": len(b["tokens"])})
    report = {"model": args.model, "device": args.device, "dtype": args.dtype or "default",
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in rows:
            print(f"{r['device_tok_s']:>8} tok/s on {args.device} | {r['cpu_tok_s']:>6} tok/s cpu | "
                  f"first difference at {r['first_difference']} | {r['prompt'][:40]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
