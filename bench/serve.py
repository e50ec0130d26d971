"""`cpm bench serve`: concurrent streaming clients — throughput and latency percentiles.

Default (in-process): one Engine, N client threads each streaming `--requests` requests of mixed prompt lengths
through `Engine.stream`, run twice back to back in the same process: through the scheduler (all clients at
once, continuous batching over the paged KV pool) and one at a time (a lock around each whole request, as every
caller had to do before the scheduler). Reports requests/s, generated tokens/s, p50/p99 time to first token and
inter-token latency for both, and their ratio.

`--prefix`: a 6-turn conversation with the tool schemas of real MCP servers (mcp-server-git, -sqlite, -time,
listed through mcp_client) in its system prompt, run with the prefix cache off and then on in the same process
on the same prompts; time to first token per turn, the ratio for turns 2-6 and the cache hit rate.

`--http`: starts `cpm serve` as a subprocess (as a user would) once per `--max-batch` value, then N clients each send
`--requests` chat completions back to back (greedy, `--max-tokens` new tokens). Reports requests/s, completion
tokens/s and p50/p99 latency per configuration, so batching is measured against one-at-a-time serving in the
same run. `--stream` makes the clients stream (SSE) and also reports time to first token.

`--peer vllm --peer llama-server`: the same load (N streaming clients, mixed prompt lengths, greedy, the default
model) against `cpm serve` and then each real peer (installed by bench/peers/install.sh into .peers/), one
server at a time on a loopback port, in one run: requests/s, tokens/s, p50/p99 time to first token, and each
peer's throughput as a ratio to `cpm serve`'s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

QUESTIONS = [
    "What is a transformer in machine learning?", "Explain retrieval-augmented generation briefly.",
    "Why do language models hallucinate?", "What does a KV cache store?", "Define speculative decoding.",
    "What is quantization of neural networks?", "How does beam search work?", "What is a tokenizer?",
    "Name three uses of sentence embeddings.", "What is sparse attention?", "What is instruction tuning?",
    "Why is batching faster on a GPU?", "What is a FAISS index?", "Explain top-p sampling.",
    "What is a mixture of experts?", "What does RLHF stand for?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, device: str, max_batch: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "tui.cli", "serve", "--model", model, "--device", device, "--port", str(port),
           "--max-batch", str(max_batch)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cpm serve exited with {proc.returncode}; its log: {log}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"cpm serve did not come up within 900 s; its log: {log}")


async def _one(client: httpx.AsyncClient, url: str, question: str, max_tokens: int, stream: bool,
               model: str = "default") -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0}
    t0 = time.perf_counter()
    if not stream:
        r = await client.post(url + "/v1/chat/completions", json=body)
        r.raise_for_status()
        return {"latency": time.perf_counter() - t0, "tokens": r.json()["usage"]["completion_tokens"], "ttft": None}
    body["stream"], body["stream_options"] = True, {"include_usage": True}
    ttft, tokens, pieces = None, 0, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if event.get("choices") and (event["choices"][0].get("delta") or {}).get("content"):
                pieces += 1
                ttft = ttft if ttft is not None else time.perf_counter() - t0
    # a server that sends no usage: one streamed piece per token is the best count available
    return {"latency": time.perf_counter() - t0, "tokens": tokens or pieces, "ttft": ttft}


async def load_test(url: str, clients: int, requests: int, max_tokens: int, stream: bool, mixed: bool = False,
                    model: str = "default") -> dict:
    """`mixed`: prompts of mixed lengths (`mixed_content`); otherwise the short QUESTIONS."""
    def question(c: int, i: int) -> str:
        return mixed_content(c + i * clients) if mixed else QUESTIONS[(c + i) % len(QUESTIONS)]

    async def client_loop(c: int, client: httpx.AsyncClient) -> list[dict]:
        return [await _one(client, url, question(c, i), max_tokens, stream, model) for i in range(requests)]

    # no keep-alive: llama-server closes idle connections, and a request sent on one just closed fails
    # (RemoteProtocolError); a fresh connection per request costs every server the same
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=1800, limits=limits) as client:
        # warm-up at full concurrency: kernel autotuning and graph capture for every batch size happen here
        for _ in range(2):
            await asyncio.gather(*[_one(client, url, QUESTIONS[c % len(QUESTIONS)], 8, False, model)
                                   for c in range(clients)])
        before = await _health(client, url)
        t0 = time.perf_counter()
        per_client = await asyncio.gather(*[client_loop(c, client) for c in range(clients)])
        wall = time.perf_counter() - t0
        health = await _health(client, url)
    done = [r for rs in per_client for r in rs]
    lat = sorted(r["latency"] for r in done)
    ttfts = sorted(r["ttft"] for r in done if r["ttft"] is not None)
    out = {"requests": len(done), "wall_s": round(wall, 3), "req_s": round(len(done) / wall, 3),
           "completion_tok_s": round(sum(r["tokens"] for r in done) / wall, 1),
           "p50_s": round(statistics.median(lat), 3), "p99_s": round(_pct(lat, 0.99), 3),
           "mean_batch": _mean_batch(before, health)}
    if ttfts:
        out["ttft_p50_s"], out["ttft_p99_s"] = round(statistics.median(ttfts), 3), round(_pct(ttfts, 0.99), 3)
    return out


async def _health(client: httpx.AsyncClient, url: str) -> dict:
    """/health's counters (`cpm serve`); peers answer it without them (vLLM with an empty body)."""
    try:
        data = (await client.get(url + "/health")).json()
    except (json.JSONDecodeError, httpx.HTTPError):
        return {}
    return data if isinstance(data, dict) else {}


def _mean_batch(before: dict, after: dict) -> float | None:
    """Generated tokens per scheduler step over the run (/health's counters): the mean rows a decode step carried."""
    if "steps" not in after:
        return None
    steps = after.get("steps", 0) - before.get("steps", 0)
    return round((after.get("generated_tokens", 0) - before.get("generated_tokens", 0)) / steps, 2) if steps else 1.0


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


CONTEXT_REPEATS = (0, 1, 3, 6)  # prompt lengths from ~30 to ~700 tokens, mixed across the clients


def mixed_content(i: int) -> str:
    """User message i: a question after 0-6 paragraphs of context (the other questions), so lengths mix."""
    reps = CONTEXT_REPEATS[i % len(CONTEXT_REPEATS)]
    context = " ".join(QUESTIONS[(i + j) % len(QUESTIONS)] for j in range(reps * len(QUESTIONS) // 2))
    question = QUESTIONS[i % len(QUESTIONS)]
    return f"Context: {context}\n\nQuestion: {question}" if context else question


def mixed_prompt(engine, i: int) -> str:
    """`mixed_content(i)` as a chat prompt for the in-process engine."""
    return engine.apply_chat_template([{"role": "user", "content": mixed_content(i)}])


def _stream_one(engine, prompt: str, max_tokens: int, lock) -> dict:
    """One streaming request; `lock` (one-at-a-time mode) is held for its whole length, as EngineRunner did."""
    import contextlib

    t0 = time.perf_counter()
    stamps, tokens = [], 0
    with lock or contextlib.nullcontext():
        for chunk in engine.stream(prompt, max_tokens=max_tokens, temperature=0.0):
            if chunk.result is not None:
                tokens = chunk.result.decode_tokens
            if chunk.token_id is not None and chunk.result is None:
                stamps.append(time.perf_counter())
    ttft = stamps[0] - t0 if stamps else None
    return {"latency": time.perf_counter() - t0, "tokens": tokens, "ttft": ttft,
            "itl": [b - a for a, b in zip(stamps, stamps[1:])]}


def in_process_run(engine, clients: int, requests: int, max_tokens: int, one_at_a_time: bool) -> dict:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock() if one_at_a_time else None
    prompts = [[mixed_prompt(engine, c + i * clients) for i in range(requests)] for c in range(clients)]

    def client(c: int) -> list[dict]:
        return [_stream_one(engine, p, max_tokens, lock) for p in prompts[c]]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft"] for r in done if r["ttft"] is not None)
    itls = sorted(x for r in done for x in r["itl"])
    return {"mode": "one-at-a-time" if one_at_a_time else "scheduler", "requests": len(done),
            "wall_s": round(wall, 2), "req_s": round(len(done) / wall, 3),
            "tok_s": round(sum(r["tokens"] for r in done) / wall, 1),
            "ttft_p50_s": round(statistics.median(ttfts), 3), "ttft_p99_s": round(_pct(ttfts, 0.99), 3),
            "itl_p50_s": round(statistics.median(itls), 4) if itls else None,
            "itl_p99_s": round(_pct(itls, 0.99), 4) if itls else None}


def in_process(args) -> int:
    import torch

    from engine import Engine

    engine = Engine.load(args.model, device="cpu" if args.device == "auto" else args.device)
    n_tokens = sorted({len(engine.tokenizer.encode(mixed_prompt(engine, i), add_special_tokens=False))
                       for i in range(len(CONTEXT_REPEATS))})
    in_process_run(engine, min(args.clients, 4), 1, 4, False)  # warm-up: the C kernel's build, first allocations
    rows = []
    for one in (True, False) if not args.scheduler_only else (False,):
        row = in_process_run(engine, args.clients, args.requests, args.max_tokens, one)
        rows.append(row)
        if not args.json:
            print(f"{row['mode']:>13}: {row['req_s']:.2f} req/s, {row['tok_s']:.1f} tok/s, TTFT p50 "
                  f"{row['ttft_p50_s']:.2f} s p99 {row['ttft_p99_s']:.2f} s, ITL p50 {row['itl_p50_s']} s "
                  f"p99 {row['itl_p99_s']} s", flush=True)
    if len(rows) == 2:
        rows[1]["throughput_vs_one_at_a_time"] = round(rows[1]["tok_s"] / (rows[0]["tok_s"] or 1.0), 2)
    stats = engine.stats()
    report = {"model": args.model, "device": str(engine.device), "threads": torch.get_num_threads(),
              "clients": args.clients, "requests_per_client": args.requests, "max_tokens": args.max_tokens,
              "prompt_tokens": n_tokens, "preemptions": stats.preemptions, "cached_tokens": stats.cached_tokens,
              "runs": rows}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


TURNS = ["Which tools can you use here?", "What time is it in Tokyo?", "Show me the git status of /tmp/repo.",
         "List the tables of the database.", "Convert 9:00 in London to New York time.",
         "Summarise what we did in one sentence."]
MCP_SERVERS = ("mcp-server-git", "mcp-server-sqlite", "mcp-server-time")  # installed beside this Python


async def _mcp_tools() -> list[dict]:
    from mcp_client import MCPManager

    import tempfile

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:  # where mcp-server-sqlite puts its database
        config = {"mcpServers": {name.split("-")[-1]: {"command": str(bin_dir / name), "cwd": tmp}
                                 for name in MCP_SERVERS}}
        async with MCPManager(config) as mcp:
            specs = await mcp.list_tools()
    if not specs:
        raise SystemExit("no MCP tools listed (are mcp-server-git/-sqlite/-time installed in this venv?)")
    return [t.as_openai_tool(t.name.replace(".", "_")) for t in specs]


def _conversation(engine, tools: list[dict], replies: list[str] | None, max_tokens: int) -> tuple[list, list]:
    """Run the turns as the chat layer renders them (tool schemas in the system prompt); with `replies`, the
    history uses them (the same prompts as an earlier run). Returns (per-turn rows, the replies)."""
    from agents.chat.engine_runner import ChatRequest, EngineRunner

    runner = EngineRunner(engine)
    messages = [{"role": "system", "content": "You are an assistant with tools. Use them when they help."}]
    rows, out = [], []
    for i, question in enumerate(TURNS):
        messages.append({"role": "user", "content": question})
        prep = runner.prepare(ChatRequest(messages=list(messages), tools=tools, tool_choice="auto", constrain=False,
                                          max_tokens=max_tokens))
        t0 = time.perf_counter()
        ttft, result = None, None
        for chunk in engine.stream(prep.prompt_ids, prep.params):
            if ttft is None and chunk.token_id is not None:
                ttft = time.perf_counter() - t0
            result = chunk.result or result
        reply = replies[i] if replies else result.text
        out.append(reply)
        messages.append({"role": "assistant", "content": reply})
        rows.append({"turn": i + 1, "prompt_tokens": result.prompt_tokens, "cached_tokens": result.cached_tokens,
                     "ttft_s": round(ttft, 3)})
        print(f"  turn {i + 1}/{len(TURNS)}: TTFT {ttft:.2f} s ({result.cached_tokens} cached)", file=sys.stderr,
              flush=True)
    return rows, out


def prefix_bench(args) -> int:
    from engine import Engine

    tools = asyncio.run(_mcp_tools())
    engine = Engine.load(args.model, device="cpu" if args.device == "auto" else args.device)
    engine.generate("warm-up", max_tokens=2)
    blocks = engine.loop.scheduler.blocks
    blocks.prefix_cache = False
    print("cache off:", file=sys.stderr, flush=True)
    off, replies = _conversation(engine, tools, None, args.max_tokens)
    blocks.prefix_cache = True
    print("cache on:", file=sys.stderr, flush=True)
    on, _ = _conversation(engine, tools, replies, args.max_tokens)
    later = slice(1, None)
    ratio = sum(r["ttft_s"] for r in off[later]) / max(1e-9, sum(r["ttft_s"] for r in on[later]))
    hit = sum(r["cached_tokens"] for r in on) / sum(r["prompt_tokens"] for r in on)
    report = {"model": args.model, "tools": len(tools), "turns": len(TURNS), "max_tokens": args.max_tokens,
              "cache_off": off, "cache_on": on, "ttft_ratio_turns_2_6": round(ratio, 2), "hit_rate": round(hit, 3)}
    if not args.json:
        for a, b in zip(off, on):
            print(f"turn {a['turn']}: {a['prompt_tokens']} prompt tokens, TTFT off {a['ttft_s']:.2f} s, on "
                  f"{b['ttft_s']:.2f} s ({b['cached_tokens']} cached)", flush=True)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def peer_bench(args) -> int:
    """`cpm serve` and each `--peer`, one after another on the same load; see the module doc."""
    from bench.peers.servers import SERVED_NAME, Server, missing

    kinds = ["cpm", *dict.fromkeys(args.peer)]
    for kind in kinds:
        reason = missing(kind)
        if reason:
            print(f"cpm bench serve: {reason}", file=sys.stderr)
            return 2
    rows = []
    for kind in kinds:
        print(f"{kind}: starting (log in {args.log_dir})", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        server = Server(kind, args.log_dir, parallel=args.clients)
        try:
            server.ready()
            startup = round(time.perf_counter() - t0, 1)
            print(f"{kind}: ready in {startup} s; {args.clients} clients x {args.requests} requests",
                  file=sys.stderr, flush=True)
            load = asyncio.run(load_test(server.url.removesuffix("/v1"), args.clients, args.requests,
                                         args.max_tokens, True, mixed=True, model=SERVED_NAME))
        finally:
            server.stop()
        row = {"server": kind, "startup_s": startup, **load}
        rows.append(row)
        if not args.json:
            print(f"{kind:>12}: {row['req_s']:.2f} req/s, {row['completion_tok_s']:.1f} tok/s, TTFT p50 "
                  f"{row['ttft_p50_s']:.2f} s p99 {row['ttft_p99_s']:.2f} s", flush=True)
    base = rows[0]
    for row in rows[1:]:
        row["cpm_tok_s_ratio"] = round(base["completion_tok_s"] / (row["completion_tok_s"] or 1e-9), 2)
        row["cpm_ttft_p50_ratio"] = round(row["ttft_p50_s"] / (base["ttft_p50_s"] or 1e-9), 2)
    report = {"model": SERVED_NAME, "clients": args.clients, "requests_per_client": args.requests,
              "max_tokens": args.max_tokens, "stream": True, "prompts": "mixed", "runs": rows}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cpm bench serve", description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--http", action="store_true", help="measure `cpm serve` over HTTP instead of the engine "
                    "in-process")
    ap.add_argument("--prefix", action="store_true", help="prefix cache off vs on over a 6-turn conversation "
                    "with real MCP tool schemas")
    ap.add_argument("--scheduler-only", action="store_true", help="in-process: skip the one-at-a-time run")
    ap.add_argument("--max-batch", type=int, action="append", help="--http: server --max-batch values to compare "
                    "(repeatable; default 1 and 8)")
    ap.add_argument("--stream", action="store_true", help="--http: clients stream (SSE)")
    ap.add_argument("--peer", action="append", choices=("vllm", "llama-server"), default=[],
                    help="also serve the same load from this real peer (repeatable; installed by "
                         "bench/peers/install.sh into .peers/), after `cpm serve`, in the same run")
    ap.add_argument("--log-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.prefix:
        return prefix_bench(args)
    if args.peer:
        return peer_bench(args)
    if not args.http:
        return in_process(args)
    rows = []
    for mb in args.max_batch or [1, 8]:
        proc, url = start_server(args.model, args.device, mb, args.log_dir / f"cpm-serve-b{mb}.log")
        try:
            row = {"max_batch": mb, **asyncio.run(load_test(url, args.clients, args.requests, args.max_tokens,
                                                            args.stream))}
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        rows.append(row)
        if not args.json:
            print(f"max_batch {mb:>2}: {row['req_s']:.2f} req/s, {row['completion_tok_s']:.1f} tok/s, "
                  f"p50 {row['p50_s']:.2f} s, p99 {row['p99_s']:.2f} s, mean batch {row['mean_batch']}", flush=True)
    base = rows[0]["completion_tok_s"] or 1.0
    for row in rows:
        row["throughput_vs_first"] = round(row["completion_tok_s"] / base, 2)
    report = {"model": args.model, "device": args.device, "clients": args.clients, "requests_per_client":
              args.requests, "max_tokens": args.max_tokens, "stream": args.stream, "runs": rows}
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
