"""`cpm serve`: an OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings) on
the embedded engine."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("--model", default="smollm2-135m", help="model alias or path (default: smollm2-135m)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--max-running", type=int, default=None, help="sequences decoded together in a step (vLLM's "
                   "--max-num-seqs; default: the engine's, 16); every request joins the scheduler's continuous batch")
    p.add_argument("--max-batch", type=int, default=None, help="CUDA only: contiguous cache rows for what still "
                   "runs outside the scheduler (speculative requests, InfLLM v2 engines; default: 8 on a GPU)")
    p.add_argument("--max-waiting", type=int, default=64, help="requests queued beyond those decoding before the "
                   "server answers 503 with Retry-After (default: 64)")
    p.add_argument("--no-prefix-cache", action="store_true", help="prefill every prompt from its start (the "
                   "prefix cache is on by default; CPM_PREFIX_CACHE=0 turns it off for every command)")
    p.add_argument("--served-name", default=None, help="model id clients send and /v1/models lists "
                   "(default: the --model value)")
    p.add_argument("--index", default=None, metavar="DIR", help="serve this index's embedder on /v1/embeddings "
                   "(without it, /v1/embeddings answers 404)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from agents.chat.engine_runner import EngineRunner
    from engine import Engine
    from tui.errors import UsageError
    from tui.server import create_app

    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a TCP port (1-65535)")
    for flag, value in (("--max-batch", args.max_batch), ("--max-running", args.max_running)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.max_waiting < 0:
        raise UsageError(f"--max-waiting must be >= 0, got {args.max_waiting}")
    max_batch = args.max_batch or (8 if _has_cuda(args.device) else 1)
    embedder = _index_embedder(args.index, args.device) if args.index else None
    running = {"max_running": args.max_running} if args.max_running else {}
    engine = Engine.load(args.model, device=args.device, max_batch=max_batch,
                         prefix_cache=False if args.no_prefix_cache else None, **running)
    app = create_app(EngineRunner(engine), args.served_name or args.model, embedder, args.max_waiting)
    extra = f", embeddings by {embedder.name}" if embedder else ""
    batching = f"continuous batching of up to {engine.loop.scheduler.max_running} sequences"
    print(f"cpm serve: {args.model} on http://{args.host}:{args.port}/v1, {engine.device}, {batching}, "
          f"{args.max_waiting} waiting at most{extra} (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _has_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def _index_embedder(directory: str, device: str):
    """The embedder the index was built with (named in its manifest), loaded once for /v1/embeddings."""
    from pathlib import Path

    from retrieval.embed import Embedder
    from retrieval.layout import read_manifest

    return Embedder(read_manifest(Path(directory).expanduser())["embedder"]["name"], device=device)
