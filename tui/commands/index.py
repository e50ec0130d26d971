"""`cpm index build|add|info|search|fetch-arxiv`: paper collections -> a FAISS index with a SQLite doc store.

faiss, torch and sentence-transformers are imported inside the run functions, so `cpm --help` stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, extend, inspect and search a paper index (FAISS + SQLite)",
                       description="Paper index: FAISS vectors beside a SQLite doc store (see docs/retrieval.md).")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = isub.add_parser("build", help="create an index from JSONL / Markdown / text / PDF inputs")
    _ingest_options(b)
    b.add_argument("--embedder", default="minilm", help="embedder alias or local directory (default: minilm)")
    b.add_argument("--max-seq-length", type=int, help="embedder window in word pieces (default: the model's; "
                   "lower is faster on CPU)")
    b.add_argument("--chunk-words", type=int, default=200, help="words per chunk (default 200)")
    b.add_argument("--overlap", type=int, default=40, help="words shared by consecutive chunks (default 40)")
    b.set_defaults(func=run_build)

    a = isub.add_parser("add", help="add new documents to an index (documents already present are skipped)")
    _ingest_options(a)
    a.add_argument("--embedder", help="must match the index's embedder (it is refused otherwise)")
    a.set_defaults(func=run_add)

    i = isub.add_parser("info", help="what an index holds: counts, embedder, FAISS type and parameters")
    i.add_argument("directory", type=Path)
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=run_info)

    s = isub.add_parser("search", help="search an index")
    s.add_argument("--index", required=True, type=Path, dest="directory", help="index directory")
    s.add_argument("-k", type=int, default=10, help="number of documents (default 10)")
    s.add_argument("--hybrid", action="store_true", help="fuse dense and BM25 rankings (reciprocal rank fusion)")
    s.add_argument("--json", action="store_true", help="print the hits as a JSON list")
    s.add_argument("query", nargs="+", help="the query text")
    s.set_defaults(func=run_search)

    f = isub.add_parser("fetch-arxiv", help="fetch paper records from the arXiv API into a JSONL file")
    f.add_argument("query", help="arXiv API search query, e.g. 'all:speculative decoding' or 'cat:cs.CL'")
    f.add_argument("--max", type=int, default=100, dest="max_results", help="most records to fetch (default 100)")
    f.add_argument("--out", type=Path, required=True, help="JSONL file to write (must not exist)")
    f.add_argument("--delay", type=float, default=3.0, help="seconds between API requests (arXiv asks for 3)")
    f.add_argument("--base-url", default=None, help="API endpoint (default: http://export.arxiv.org/api/query)")
    f.set_defaults(func=run_fetch)


def _ingest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help=".jsonl/.json(.gz) files, .md/.txt/.pdf files or folders")
    p.add_argument("--index", required=True, type=Path, dest="directory", help="index directory")
    p.add_argument("--fields", help="JSONL field mapping, e.g. 'title=name,abstract=body,id=doi'")
    p.add_argument("--categories", help="keep only these arXiv categories (comma-separated; 'cs' keeps cs.*)")
    p.add_argument("--year-from", type=int, help="keep papers from this year on")
    p.add_argument("--year-to", type=int, help="keep papers up to this year")
    p.add_argument("--limit", type=int, help="stop after this many documents")
    p.add_argument("--batch-size", type=int, default=64, help="embedding batch size (default 64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--ivf-threshold", type=int, default=50_000, help="vectors from which IVF replaces flat")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _documents(args):
    from retrieval.ingest import IngestFilter, read_documents
    from retrieval.ingest_jsonl import parse_fields
    from retrieval.progress import Ticker, say

    cats = tuple(c.strip() for c in (args.categories or "").split(",") if c.strip())
    filt = IngestFilter(categories=cats, year_min=args.year_from, year_max=args.year_to, limit=args.limit)
    reading = f"reading {', '.join(str(p) for p in args.inputs)}"
    ticker = Ticker(not args.quiet, "documents read", first=reading)
    docs = list(ticker.wrap(read_documents(args.inputs, parse_fields(args.fields), filt)))
    say(not args.quiet and bool(docs), f"read {len(docs)} documents")  # none: the builder's one error line
    return docs


def _config(args, **extra):
    from retrieval.config import FaissConfig, IndexConfig

    return IndexConfig(batch_size=args.batch_size, device=args.device, progress=not args.quiet,
                       faiss=FaissConfig(ivf_threshold=args.ivf_threshold), **extra)


def _print_report(verb: str, report) -> None:
    print(f"{verb} {report.added_docs} documents ({report.added_chunks} chunks; {report.skipped_docs} already present) "
          f"in {report.seconds:.1f}s -> {report.directory}: {report.total_docs} documents, "
          f"{report.total_chunks} chunks, {report.index_type}")


def run_build(args: argparse.Namespace) -> int:
    from retrieval.builder import build_index, check_build_target
    from retrieval.config import ChunkConfig

    cfg = _config(args, embedder=args.embedder, max_seq_length=args.max_seq_length,
                  chunk=ChunkConfig(args.chunk_words, args.overlap))
    check_build_target(args.directory)  # a taken directory fails before the inputs are read
    _print_report("indexed", build_index(_documents(args), args.directory, cfg))
    return 0


def run_add(args: argparse.Namespace) -> int:
    from retrieval.builder import add_to_index, check_embedder
    from retrieval.layout import read_manifest

    # A wrong directory or embedder fails before the inputs are read.
    check_embedder(args.directory, read_manifest(args.directory), args.embedder)
    _print_report("added", add_to_index(_documents(args), args.directory, args.embedder, _config(args)))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from retrieval.index import Index

    index = Index.open(args.directory)
    info = index.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    fa = info["faiss"]["params"]
    extra = ", ".join(f"{k}={v}" for k, v in fa.items() if k not in ("type", "dim"))
    print(f"index      {info['directory']} (generation {info['generation']}, updated {info['updated']})")
    print(f"documents  {info['counts']['documents']}  chunks {info['counts']['chunks']}")
    print(f"embedder   {info['embedder']['name']} ({info['embedder']['dim']}-d, window {info['embedder']['max_seq_length']})")
    print(f"faiss      {fa['type']}{' (' + extra + ')' if extra else ''}")
    print(f"chunking   {info['chunking']['words']} words, {info['chunking']['overlap']} overlap")
    return 0


def run_search(args: argparse.Namespace) -> int:
    from retrieval.index import Index

    hits = Index.open(args.directory).search(" ".join(args.query), k=args.k, hybrid=args.hybrid)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=2))
        return 0
    for rank, h in enumerate(hits, 1):
        year = f" ({h.year})" if h.year else ""
        print(f"{rank:>2}. [{h.score:.3f}] {h.id}  {h.title}{year}")
        print(f"    {h.text[:160]}{'...' if len(h.text) > 160 else ''}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from retrieval.arxiv_api import DEFAULT_URL, fetch_to_jsonl

    n = fetch_to_jsonl(args.query, args.out, args.max_results, base_url=args.base_url or DEFAULT_URL,
                       delay=args.delay, log=lambda msg: print(msg, file=sys.stderr))
    print(f"wrote {n} records to {args.out}; index them with `cpm index build {args.out} --index DIR`")
    return 0
