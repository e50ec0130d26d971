"""`cpm bench engine`: decode/prefill speed of the engine (random MiniCPM4-shaped weights) beside its peers.

    cpm bench engine --shape {0.5b,8b} --quant {int4,bf16} --batch B --prompt-len P --gen-len G
                     [--compare hf,gptfast] [--micro] [--model NAME_OR_PATH] [--json]

What is timed is the engine itself: engine/model.py's Transformer with random weights at the real shapes
(bench/peers/shapes.py; int4 = engine.quant.Int4Weight, group 128), its KV cache and Runner: prefill is
Runner.prefill (chunked), decode replays the Runner's own captured CUDA graph (which advances its own token
and position), timed with CUDA events after warm-up; `decode_loop_tok_s` (batch 1) is Runner.decode_greedy
in a host loop, one sync a token, and `decode_chunks_tok_s` Runner.greedy_chunks (replays back to back, picks
read 8 at a time), as the row path runs greedy decoding. `--model` times a real checkpoint instead (its
own config, random prompt ids), and at batch 1 also the scheduler's paged path (`paged_graph_loop_tok_s`:
Runner.decode_paged replaying its bucket-1 graph in the same host loop; `paged_greedy_runs_tok_s`:
Runner.decode_paged_greedy, 8 replays back to back as the engine loop runs an all-greedy batch;
`paged_eager_loop_tok_s` without graphs). In the same run it measures the two ceilings (device copy bandwidth, bf16
matmul rate) and times the peers: HF transformers eager bf16 (`hf`) and gpt-fast-style compiled static-cache
decoding in bf16 and tinygemm int4 (`gptfast`). `--micro` adds kernel microbenchmarks (bench/_engine_micro.py).
"""
from __future__ import annotations

import argparse
import gc
import json

import torch

from bench.peers.shapes import SHAPES


def measure_ceilings() -> dict:
    """Device-to-device copy bandwidth (bytes read + written) and an 8192^3 bf16 matmul rate, measured here."""
    src = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    copy_ms = _event_ms(lambda: dst.copy_(src), 10)
    mm_ms = _event_ms(lambda: a @ b, 10)
    del src, dst
    return {"copy_GBps": 2 * 2 * 1024**3 / copy_ms / 1e6, "bf16_TFLOPs": 2 * 8192**3 / mm_ms / 1e9}


def _event_ms(fn, reps: int, warmup: int = 3) -> float:
    """Median milliseconds of fn over reps, each bracketed by CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[len(times) // 2]


def run_engine(shape: str, quant: str, batch: int, prompt_len: int, gen_len: int, ceil: dict,
               model: str | None = None) -> dict:
    """Build the engine, time prefill and graph-replayed decode, check graph == eager greedy tokens."""
    import time

    from bench._random_engine import random_runner, weight_bytes

    max_len = prompt_len + gen_len + 16
    engine = None
    if model:
        from engine import Engine

        engine = Engine.load(model, device="cuda", max_seq_len=max_len, max_batch=batch)
        runner = engine.runner
    else:
        runner = random_runner(SHAPES[shape], quant, batch, max_len)
    cfg = runner.model.cfg
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, cfg.vocab_size, (prompt_len,), generator=g).tolist() for _ in range(batch)]

    def prefill() -> torch.Tensor:  # the engine's path: each prompt into its own cache row
        return torch.cat([runner.prefill(p, row=b) for b, p in enumerate(prompts)]).argmax(-1)

    with torch.inference_mode():
        prefill_ms = _event_ms(prefill, 3, warmup=1)
        first = prefill()
        check = min(16, gen_len)
        runner.use_graphs = False  # the same kernels launched one by one: the reference for the graph
        eager, tok, pos = [], first, torch.full((batch,), prompt_len, device="cuda")
        for _ in range(check):
            tok = runner.decode_batch(tok, pos).argmax(-1)
            eager.append(tok)
            pos = pos + 1
        runner.use_graphs = True
        prefill()
        # the graph decode_batch (or, batch 1, decode_greedy at the run's longest length) replays
        graph = runner._graph(batch, prompt_len + gen_len - 1 if batch == 1 else None)

        def start() -> None:
            graph.tokens[:, 0].copy_(first)
            graph.pos.fill_(prompt_len)

        start()
        replayed = []
        for _ in range(check):
            graph.replay()
            replayed.append(graph.next.clone())
        same = bool(torch.equal(torch.stack(eager), torch.stack(replayed)))
        prefill()
        start()
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(gen_len):  # back to back: each replay feeds its pick to the next
            graph.replay()
        t1.record()
        torch.cuda.synchronize()
        step_ms = t0.elapsed_time(t1) / gen_len
        loop_tok_s = chunks_tok_s = None
        if batch == 1:
            for _ in range(2):  # the first run captures the graphs of each length regime it crosses
                prefill()
                tok, t = int(first[0]), time.perf_counter()
                for p in range(prompt_len, prompt_len + gen_len):
                    tok = runner.decode_greedy(tok, p)
                loop_tok_s = gen_len / (time.perf_counter() - t)
            prefill()  # Engine.generate's greedy path: replays back to back, picks read 8 at a time
            t = time.perf_counter()
            for _ in runner.greedy_chunks(int(first[0]), prompt_len, gen_len):
                pass
            chunks_tok_s = gen_len / (time.perf_counter() - t)
        paged = paged_decode(runner, engine.pool, prompts[0], gen_len, int(first[0])) \
            if engine is not None and batch == 1 else {}
    kv_bytes = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 2 * batch * (prompt_len + gen_len / 2)
    step_bytes = weight_bytes(runner.model) + kv_bytes
    out = {"name": f"engine-{quant}" if not model else f"engine-{model}", "prefill_ms": prefill_ms,
           "decode_ms_per_step": step_ms, "decode_tok_s": batch * 1e3 / step_ms, "decode_loop_tok_s": loop_tok_s,
           "decode_chunks_tok_s": chunks_tok_s,
           "GBps": step_bytes / step_ms / 1e6, "roofline_frac": step_bytes / step_ms / 1e6 / ceil["copy_GBps"],
           "roofline_tok_s": batch * ceil["copy_GBps"] * 1e9 / step_bytes,
           "prefill_TFLOPs": _prefill_flops(cfg, batch, prompt_len) / prefill_ms / 1e9,
           "graph_equals_eager": same, "step_bytes": step_bytes, **paged}
    out["prefill_frac_of_peak"] = out["prefill_TFLOPs"] / ceil["bf16_TFLOPs"]
    del runner, graph
    return out


def paged_decode(runner, pool, prompt: list[int], gen_len: int, first: int) -> dict:
    """Batch-1 greedy decode on the scheduler's path (the paged pool, Runner.decode_paged: the bucket-1 CUDA
    graph with the block table as a graph input), in a host loop with one sync a token like decode_loop_tok_s,
    graphs on and off; and how many of its tokens equal the row path's graph tokens. It writes pool blocks
    0.. directly: the engine's loop is idle here, so no sequence holds them."""
    import time

    table = list(range(-(-(len(prompt) + gen_len) // pool.block_size)))
    out = {}
    for graphs in (True, False):
        runner.use_graphs = graphs
        for _ in range(2 if graphs else 1):  # the first graph run captures
            runner.run_paged(pool, [table], [0], [prompt])
            tok, toks, t = first, [], time.perf_counter()
            for p in range(len(prompt), len(prompt) + gen_len):
                tok = int(runner.decode_paged(pool, [table], [p], [tok])[0].argmax())
                toks.append(tok)
            rate = gen_len / (time.perf_counter() - t)
        out["paged_graph_loop_tok_s" if graphs else "paged_eager_loop_tok_s"] = rate
        if graphs:  # the loop's greedy runs: 8 graph replays back to back, picks read with one copy
            runner.run_paged(pool, [table], [0], [prompt])
            tok, p, t = first, len(prompt), time.perf_counter()
            while p < len(prompt) + gen_len:
                n = min(8, len(prompt) + gen_len - p)
                tok = runner.decode_paged_greedy(pool, [table], [p], [tok], n)[-1][0]
                p += n
            out["paged_greedy_runs_tok_s"] = gen_len / (time.perf_counter() - t)
            runner.prefill(prompt)
            want = [t for c in runner.greedy_chunks(first, len(prompt), gen_len) for t in c]
            same = next((i for i, (a, b) in enumerate(zip(toks, want)) if a != b), len(want))
            out["paged_tokens_equal_row_graph_until"] = same  # bf16: the paths may part at a near-tie
    runner.use_graphs = True
    return out


def _prefill_flops(cfg, batch: int, p: int) -> float:
    """Matmul FLOPs of a prefill (projections + causal attention; the head for the last token only)."""
    d, h = cfg.head_dim, cfg.hidden_size
    proj = h * (cfg.num_heads + 2 * cfg.num_kv_heads) * d + cfg.num_heads * d * h + 3 * h * cfg.intermediate_size
    attn = 2 * 2 * cfg.num_heads * d * p * p / 2  # QK^T and PV, causal half
    return batch * (cfg.num_layers * (2 * proj * p + attn) + 2 * h * cfg.vocab_size)


def run_peers(names: list[str], shape: str, batch: int, prompt_len: int, gen_len: int, hf_gen_len: int) -> list:
    """Time each peer named in --compare on the same shape, one at a time (freed before the next)."""
    s, results = SHAPES[shape], []
    if "gptfast" in names:
        from bench.peers import gptfast

        for quant in ("bf16", "int4"):
            try:
                model = gptfast.Transformer(s, quant, batch, prompt_len + gen_len + 16)
                if quant == "int4":  # the peer's own check: tinygemm vs its dense weight
                    lin = model.layers[0].wqkv
                    x = torch.randn(3, s.hidden, device="cuda", dtype=torch.bfloat16)
                    err = ((lin(x).float() - x.float() @ lin.dense().t()).norm() / (x.float() @ lin.dense().t()).norm())
                    print(f"gptfast int4 self-check rel err {err.item():.2e}")
                r = gptfast.time_decode(model, batch, prompt_len, gen_len)
                results.append({"name": f"gptfast-{quant}", **r})
            except Exception as e:  # a missing op (no tinygemm on this build) must not lose the other numbers
                results.append({"name": f"gptfast-{quant}", "error": f"{type(e).__name__}: {e}"})
            model = None
            gc.collect()
            torch.cuda.empty_cache()
            torch._dynamo.reset()
    if "hf" in names:
        from bench.peers import hf

        model = hf.build(s)
        results.append({"name": "hf-eager-bf16", **hf.time_generate(model, batch, prompt_len, hf_gen_len)})
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return results


def _table(rows: list[dict], ours: dict) -> str:
    lines = [f"{'who':<16}{'tok/s':>10}{'ms/tok':>9}{'prefill ms':>12}{'ours/them':>11}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:<16}  {r['error'][:80]}")
            continue
        ratio = ours["decode_tok_s"] / r["decode_tok_s"]
        lines.append(f"{r['name']:<16}{r['decode_tok_s']:>10.1f}{r['decode_ms_per_step']:>9.3f}"
                     f"{r['prefill_ms']:>12.1f}{ratio:>11.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cpm bench engine", description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="0.5b")
    p.add_argument("--quant", choices=["int4", "bf16"], default="int4")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--gen-len", type=int, default=256)
    p.add_argument("--hf-gen-len", type=int, default=64, help="HF generate is slow: fewer tokens suffice")
    p.add_argument("--compare", default="", help="comma-separated peers: hf, gptfast")
    p.add_argument("--micro", action="store_true", help="also run the kernel microbenchmarks")
    p.add_argument("--model", default=None, help="time a real checkpoint (alias or path) instead of random weights")
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        from engine.errors import EngineError

        raise EngineError("cpm bench engine needs a CUDA GPU (the kernels are timed on it)")
    ceil = measure_ceilings()
    print(f"{torch.cuda.get_device_name()}: copy {ceil['copy_GBps']:.0f} GB/s, "
          f"bf16 matmul {ceil['bf16_TFLOPs']:.0f} TFLOP/s")
    ours = run_engine(a.shape, a.quant, a.batch, a.prompt_len, a.gen_len, ceil, a.model)
    gc.collect()
    torch.cuda.empty_cache()
    peers = run_peers([n for n in a.compare.split(",") if n], a.shape, a.batch, a.prompt_len, a.gen_len,
                      a.hf_gen_len)
    micro = None
    if a.micro:
        from bench._engine_micro import run_micro

        micro = run_micro(ceil)
    print(f"shape {a.shape} quant {a.quant} batch {a.batch} prompt {a.prompt_len} gen {a.gen_len}")
    print(_table([ours] + peers, ours))
    if ours["decode_loop_tok_s"]:
        print(f"ours, Runner.decode_greedy host loop: {ours['decode_loop_tok_s']:.1f} tok/s; "
              f"Runner.greedy_chunks: {ours['decode_chunks_tok_s']:.1f} tok/s")
    if "paged_graph_loop_tok_s" in ours:
        print(f"ours, scheduler's paged path: greedy runs of 8 {ours['paged_greedy_runs_tok_s']:.1f} tok/s, host "
              f"loop graph {ours['paged_graph_loop_tok_s']:.1f} tok/s, eager {ours['paged_eager_loop_tok_s']:.1f} "
              f"tok/s; tokens equal the row graph's for the first {ours['paged_tokens_equal_row_graph_until']}")
    print(f"ours: {ours['GBps']:.0f} GB/s = {ours['roofline_frac']:.0%} of copy bandwidth; prefill "
          f"{ours['prefill_TFLOPs']:.0f} TFLOP/s = {ours['prefill_frac_of_peak']:.0%} of bf16 matmul peak; "
          f"graph tokens == eager: {ours['graph_equals_eager']}")
    from engine.kernels import int4_matmul as k4

    kernels = [getattr(k4, n) for n in dir(k4) if hasattr(getattr(k4, n), "cache") and hasattr(getattr(k4, n), "configs")]
    tuned = {str(key): str(cfg) for kern in kernels for key, cfg in kern.cache.items()}
    print("autotuned int4 configs:", json.dumps(tuned))
    if a.json:
        print(json.dumps({"args": vars(a), "device": torch.cuda.get_device_name(), "ceilings": ceil,
                          "engine": ours, "peers": peers, "micro": micro}))
    return 0
