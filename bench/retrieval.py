"""`cpm bench retrieval`: embedding throughput on CPU, FAISS build time and search latency, flat vs IVF.

Search latency is one query at a time (how the survey writer and the TUI search), over random unit vectors
of the embedder's dimension; IVF recall@k against the exact flat result is reported beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from retrieval.config import FaissConfig

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "arxiv_llm_mini.jsonl"


def vector_counts(text: str) -> list[int]:
    """`--sizes 100000,1000000` -> [100000, 1000000]; argparse turns the ValueError into a usage error."""
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of vector counts, "
                                         "e.g. 100000,1000000") from None
    if min(sizes) < 100:
        raise argparse.ArgumentTypeError(f"each size must be at least 100 vectors (got {min(sizes)})")
    return sizes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cpm bench retrieval", description=__doc__)
    p.add_argument("--sizes", type=vector_counts, default=[100000],
                   help="comma-separated vector counts (e.g. 100000,1000000; 1000000 alone runs just 1M)")
    p.add_argument("--dim", type=int, default=384, help="vector dimension (MiniLM: 384)")
    p.add_argument("--queries", type=int, default=500, help="single queries timed per index")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: the index builder's ~4*sqrt(n))")
    p.add_argument("--train-sample", type=int, default=FaissConfig.train_sample,
                   help="vectors the IVF is trained on (default %(default)s; FAISS needs >= 39 per list, so the "
                        "builder raises it to 39*nlist)")
    p.add_argument("--data", choices=("random", "clustered"), default="random",
                   help="uniform random unit vectors (IVF's worst case) or a 1,000-centre mixture (closer to "
                        "real embeddings)")
    p.add_argument("--threads", type=int, default=None, help="FAISS OpenMP threads (default: FAISS's own)")
    p.add_argument("--embed-docs", type=int, default=300, help="papers embedded for docs/s (0: skip)")
    p.add_argument("--max-seq-length", type=int, default=None, help="embedder window (default: the model's)")
    p.add_argument("--corpus", type=Path, default=Path(os.environ.get("CPM_BENCH_CORPUS", DEFAULT_CORPUS)))
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def bench_embed(args) -> dict:
    """Papers (title + abstract, as indexed) per second through the default embedder."""
    from retrieval.builder import embed_text
    from retrieval.embed import Embedder
    from retrieval.ingest import IngestFilter, read_documents

    docs = list(read_documents([args.corpus], filt=IngestFilter(limit=args.embed_docs)))
    emb = Embedder("minilm", args.device, args.max_seq_length)
    emb.encode([embed_text(d.title, d.text) for d in docs[:16]], 16)  # warm-up: first batches pay one-off costs
    texts = [embed_text(d.title, d.text) for d in docs]
    start = time.perf_counter()
    emb.encode(texts, 64)
    seconds = time.perf_counter() - start
    import torch

    return {"docs": len(docs), "seconds": round(seconds, 2), "docs_per_s": round(len(docs) / seconds, 1),
            "max_seq_length": emb.max_seq_length, "device": args.device, "torch_threads": torch.get_num_threads()}


def unit_vectors(n: int, dim: int, seed: int, data: str = "random") -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    if data == "clustered":
        # Centres are drawn with a fixed seed so that base vectors and queries share them.
        centres = np.random.default_rng(12345).standard_normal((1000, dim), dtype=np.float32)
        v = centres[rng.integers(0, len(centres), n)] + 0.5 * v
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def latency(index, queries: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    times, rows = [], []
    for q in queries:
        start = time.perf_counter()
        _, r = index.search(q[None, :], k)
        times.append(time.perf_counter() - start)
        rows.append(r[0])
    ms = np.array(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}, np.array(rows)


def bench_size(n: int, args) -> list[dict]:
    """Build flat and IVF over n random vectors; time the builds and single-query searches."""
    from retrieval.faiss_index import make_index

    vectors = unit_vectors(n, args.dim, seed=0, data=args.data)
    queries = unit_vectors(args.queries, args.dim, seed=1, data=args.data)
    results = []
    truth = None
    for kind, cfg in (("flat-ip", FaissConfig(ivf_threshold=n + 1)),
                      ("ivf-flat-ip", FaissConfig(ivf_threshold=1, nprobe=args.nprobe, nlist=args.nlist,
                                                  train_sample=args.train_sample))):
        start = time.perf_counter()
        index, params = make_index(vectors, cfg)
        build_s = time.perf_counter() - start
        lat, rows = latency(index, queries, args.k)
        row = {"n": n, "index": kind, "build_s": round(build_s, 2), **lat,
               **{k: v for k, v in params.items() if k in ("nlist", "nprobe", "trained_on")}}
        if truth is None:
            truth = rows
        else:
            row[f"recall@{args.k}_vs_flat"] = round(float(np.mean(
                [len(set(a) & set(b)) / args.k for a, b in zip(rows, truth)])), 3)
        results.append(row)
        del index
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table (and JSON with --json)."""
    import faiss
    from rich.console import Console
    from rich.table import Table

    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    console = Console()
    if not console.is_terminal:
        console.width = 140  # a log file gets the whole table rather than wrapped cells
    out: dict = {"data": args.data, "dim": args.dim, "k": args.k, "queries": args.queries,
                 "cpu_count": os.cpu_count(), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    if args.embed_docs:
        out["embed"] = bench_embed(args)
        e = out["embed"]
        console.print(f"embed: {e['docs_per_s']} papers/s ({e['docs']} papers, window {e['max_seq_length']}, "
                      f"{e['device']}, {e['torch_threads']} torch threads)")
    out["search"] = []
    table = Table("vectors", "index", "build s", "p50 ms", "p99 ms", "params", f"recall@{args.k} vs flat",
                  title=f"FAISS, {args.data} data, dim {args.dim}, k={args.k}, {args.queries} single queries, "
                        f"{faiss.omp_get_max_threads()} threads")
    for n in args.sizes:
        for r in bench_size(n, args):
            out["search"].append(r)
            params = ", ".join(f"{k}={r[k]}" for k in ("nlist", "nprobe", "trained_on") if k in r)
            table.add_row(f"{n:,}", r["index"], f"{r['build_s']:.2f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                          params, str(r.get(f"recall@{args.k}_vs_flat", "exact")))
    console.print(table)
    # The shared dev box's load changes the figures several-fold; the record keeps it beside them.
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
