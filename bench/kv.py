"""`cpm bench kv`: KV-cache memory one sequence holds on the paged pool, beside the static row it used to get.

Before the serving core, every batch slot owned a contiguous row of max_seq_len tokens (engine/cache.KVCache),
filled or not. Now a sequence holds ceil(tokens / block_size) blocks of one pool. For prompts of several lengths
at max_seq_len 8192 this prints the blocks held at the sequence's peak (read from the engine's stats while it
runs), their bytes, the bytes of the old static row, and the process's resident memory, which shows that pool
pages nobody wrote stay unbacked on CPU.

    cpm bench kv [--model smollm2-135m] [--max-seq-len 8192] [--lengths 512,2048,8000] [--json]
"""
from __future__ import annotations

import argparse
import json
import threading
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_blocks(engine, req) -> int:
    """Poll the engine's stats until the request ends; the most blocks in use at once."""
    peak, done = 0, threading.Event()
    waiter = threading.Thread(target=lambda: (req.result(), done.set()), daemon=True)
    waiter.start()
    while not done.is_set():
        peak = max(peak, engine.stats().kv_blocks_used)
        time.sleep(0.005)
    return max(peak, engine.stats().kv_blocks_used)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from engine.engine import Engine

    p = argparse.ArgumentParser(prog="cpm bench kv", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-seq-len", type=int, default=8192)
    p.add_argument("--lengths", default="512,2048,8000", help="prompt lengths in tokens, comma-separated")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    if not lengths or min(lengths) < 1 or max(lengths) + args.new_tokens > args.max_seq_len:
        p.error(f"--lengths must be positive and leave room for --new-tokens within --max-seq-len {args.max_seq_len}")

    rss_before_load = rss_mb()
    engine = Engine.load(args.model, device=args.device, max_seq_len=args.max_seq_len, prefix_cache=False)
    pool = engine.pool
    if pool is None:
        p.error(f"the engine on {engine.device} has no paged pool")
    bs = engine.loop.scheduler.blocks.block_size
    per_token = (pool.k.element_size() * pool.k[:, :1].numel() * 2) / bs  # K and V of one slot over all layers
    static_row = per_token * args.max_seq_len
    rss_loaded = rss_mb()
    vocab = engine.config.vocab_size
    rows = []
    for n in lengths:
        ids = [(i * 7919 + 13) % (vocab - 1000) + 500 for i in range(n)]  # ordinary tokens, no special ids
        start = time.perf_counter()
        req = engine.submit(ids, max_tokens=args.new_tokens, temperature=0.0)
        blocks = peak_blocks(engine, req)
        rows.append({"prompt_tokens": n, "context": n + args.new_tokens, "blocks_held": blocks,
                     "held_mb": round(blocks * bs * per_token / 2**20, 1),
                     "static_row_mb": round(static_row / 2**20, 1),
                     "share_of_static_row": round(blocks * bs * per_token / static_row, 3),
                     "seconds": round(time.perf_counter() - start, 1), "rss_mb_after": round(rss_mb(), 1)})
    result = {"model": args.model, "device": str(engine.device), "dtype": str(pool.k.dtype).removeprefix("torch."),
              "max_seq_len": args.max_seq_len, "block_size": bs, "kv_bytes_per_token": int(per_token),
              "pool_blocks": engine.loop.scheduler.blocks.num_blocks,
              "pool_address_space_mb": round(pool.k.nbytes * 2 / 2**20, 1),
              "rss_mb_before_load": round(rss_before_load, 1), "rss_mb_loaded": round(rss_loaded, 1), "runs": rows}
    engine.close()
    if args.json:
        print(json.dumps(result))
        return 0
    table = Table("prompt tokens", "blocks held (peak)", "KV held MB", "static row MB", "share", "s",
                  "process RSS MB after",
                  title=f"KV per sequence: {args.model}, {result['device']} {result['dtype']}, max_seq_len "
                        f"{args.max_seq_len}, block {bs}, {result['kv_bytes_per_token']:,} B/token; pool "
                        f"{result['pool_blocks']} blocks ({result['pool_address_space_mb']} MB of address space), "
                        f"RSS {result['rss_mb_loaded']} MB loaded")
    for r in rows:
        table.add_row(str(r["prompt_tokens"]), str(r["blocks_held"]), f"{r['held_mb']}", f"{r['static_row_mb']}",
                      f"{r['share_of_static_row']:.1%}", f"{r['seconds']}", f"{r['rss_mb_after']}")
    console = Console()
    if not console.is_terminal:
        console.width = 160
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
