"""`build` and `add`: documents -> chunks -> vectors -> a new index generation, switched in atomically."""
from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from retrieval import faiss_index, layout
from retrieval.chunking import chunk_text
from retrieval.config import MANIFEST_VERSION, ChunkConfig, IndexConfig
from retrieval.embed import Embedder
from retrieval.errors import RetrievalError
from retrieval.progress import say
from retrieval.store import DocStore
from retrieval.types import Document


class EmbedderMismatchError(RetrievalError):
    """The index was built with another embedder; its vectors cannot be mixed with this one's."""


@dataclass
class BuildReport:
    """What a build or add did."""

    directory: Path
    added_docs: int
    skipped_docs: int     # already in the index
    added_chunks: int
    total_docs: int
    total_chunks: int
    index_type: str
    seconds: float


def embed_text(doc_title: str, chunk: str) -> str:
    """What is embedded for a chunk: the title leads every chunk, so each one knows what paper it is from."""
    return f"{doc_title}\n{chunk}" if chunk else doc_title


def check_build_target(directory: Path) -> None:
    """RetrievalError unless `directory` can take a new index (absent, empty, or a crashed build's leftovers)."""
    if (directory / layout.MANIFEST).exists():
        raise RetrievalError(f"{directory} already holds an index; add to it with `cpm index add` "
                             "or choose a new directory")
    if directory.exists() and (not directory.is_dir() or not layout.only_leftovers(directory)):
        raise RetrievalError(f"{directory} exists and is not empty; choose a new or empty directory")


def build_index(inputs: Iterable[Document], directory: Path, cfg: IndexConfig | None = None) -> BuildReport:
    """Create a new index in `directory` (which must be empty or absent) from `inputs`."""
    cfg = cfg or IndexConfig()
    directory = Path(directory)
    check_build_target(directory)
    docs = list(inputs)
    if not docs:
        raise RetrievalError("no documents to index (inputs empty, or everything filtered out)")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with layout.writer_lock(directory):
            return _write_generation(directory, None, docs, cfg)
    except BaseException:
        layout.remove_other_generations(directory, keep=0)  # no manifest was written: leave no half index
        raise


def add_to_index(inputs: Iterable[Document], directory: Path, embedder: str | None = None,
                 cfg: IndexConfig | None = None) -> BuildReport:
    """Add the documents not yet present to the index in `directory`, as a new generation.

    The embedder, its window and the chunking come from the manifest; naming another embedder is refused.
    """
    directory = Path(directory)
    layout.read_manifest(directory)  # a missing or foreign directory fails before a lock file is made in it
    with layout.writer_lock(directory):
        manifest = layout.read_manifest(directory)  # again: another writer may have switched it meanwhile
        return _add_locked(list(inputs), directory, manifest, embedder, cfg)


def check_embedder(directory: Path, manifest: dict, embedder: str | None) -> str:
    """The index's embedder; EmbedderMismatchError when the user named another one."""
    built_with = manifest["embedder"]["name"]
    if embedder is not None and embedder != built_with:
        raise EmbedderMismatchError(f"index {directory} was built with embedder {built_with!r}, not {embedder!r}; "
                                    "vectors of two embedders cannot be mixed: use the same one or build a new index")
    return built_with


def _add_locked(docs: list[Document], directory: Path, manifest: dict, embedder: str | None,
                cfg: IndexConfig | None) -> BuildReport:
    built_with = check_embedder(directory, manifest, embedder)
    base = cfg or IndexConfig()
    cfg = IndexConfig(embedder=built_with, device=base.device, batch_size=base.batch_size,
                      max_seq_length=manifest["embedder"]["max_seq_length"],
                      chunk=ChunkConfig(**manifest["chunking"]), faiss=base.faiss, progress=base.progress)
    return _write_generation(directory, manifest, docs, cfg)


def _write_generation(directory: Path, prev: dict | None, docs: list[Document], cfg: IndexConfig) -> BuildReport:
    from retrieval.index import Index  # the reader checks the previous generation before we build on it

    start = time.perf_counter()
    old = Index.open(directory) if prev else None
    gen = prev["generation"] + 1 if prev else 1
    layout.remove_other_generations(directory, keep=prev["generation"] if prev else 0)  # leftovers of a crash
    new_store = layout.store_path(directory, gen)
    try:
        if old:
            shutil.copyfile(old.store_path, new_store)  # the old file is never written to
        store = DocStore(new_store, readonly=False)
        present = store.has(d.id for d in docs)
        fresh = []
        for d in docs:  # skip what the index holds, and repeats within this batch
            if d.id not in present:
                present.add(d.id)
                fresh.append(d)
        first_row = old.faiss.ntotal if old else 0
        texts: list[str] = []
        say(cfg.progress and bool(fresh), f"chunking {len(fresh)} new documents ({len(docs) - len(fresh)} already present)")
        for doc in fresh:
            chunks = chunk_text(doc.text, cfg.chunk)
            store.add(doc, chunks, first_row + len(texts))
            texts.extend(embed_text(doc.title, c) for c in chunks)
        if not fresh:
            store.close()
            new_store.unlink()
            return _report(directory, old, 0, len(docs), 0, prev, start)
        say(cfg.progress, f"{len(fresh)} documents -> {len(texts)} chunks; loading embedder {cfg.embedder}")
        embedder = Embedder(cfg.embedder, cfg.device, cfg.max_seq_length)
        if prev and embedder.dim != prev["embedder"]["dim"]:
            raise EmbedderMismatchError(f"embedder {cfg.embedder!r} now gives {embedder.dim}-d vectors but the index "
                                        f"holds {prev['embedder']['dim']}-d ones; build a new index")
        vectors = embedder.encode(texts, cfg.batch_size, progress=cfg.progress, label=f"embedding {len(texts)} chunks")
        if embedder.device == "cpu":
            say(cfg.progress, "caching a traced copy of the embedder, so that searches start fast")
            embedder.cache_query_trace()  # the model is loaded now: later searches start without it
        say(cfg.progress, f"writing the FAISS index and doc store to {directory}")
        if old:
            index, params = faiss_index.extend_index(old.faiss, prev["faiss"]["params"], vectors, cfg.faiss)
        else:
            index, params = faiss_index.make_index(vectors, cfg.faiss)
        store.commit()
        n_docs, n_chunks = store.counts()
        store.close()
        new_faiss = layout.faiss_path(directory, gen)
        faiss_index.write_index(index, new_faiss)
        for path in (new_faiss, new_store):
            layout.fsync(path)
        manifest = _manifest(prev, gen, cfg, embedder, params, new_faiss, new_store, n_docs, n_chunks)
        if n_chunks != index.ntotal:
            raise RetrievalError(f"internal error: {n_chunks} chunks but {index.ntotal} vectors; nothing was changed")
        layout.write_manifest(directory, manifest)  # the switch: from here on, generation `gen` is the index
    finally:
        if old:
            old.close()
    layout.remove_other_generations(directory, keep=gen)
    return BuildReport(directory, len(fresh), len(docs) - len(fresh), len(texts), n_docs, n_chunks,
                       params["type"], time.perf_counter() - start)


def _manifest(prev: dict | None, gen: int, cfg: IndexConfig, embedder: Embedder, params: dict,
              faiss_file: Path, store_file: Path, n_docs: int, n_chunks: int) -> dict:
    """The manifest of a new generation: what was built, with what, and the checksums `Index.open` checks."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "format": layout.FORMAT, "version": MANIFEST_VERSION, "generation": gen,
        "created": prev["created"] if prev else now, "updated": now,
        "embedder": {"name": cfg.embedder, "dim": embedder.dim, "max_seq_length": embedder.max_seq_length,
                     "normalized": True, "text": "title + newline + chunk"},
        "chunking": {"words": cfg.chunk.words, "overlap": cfg.chunk.overlap},
        "faiss": {**layout.file_digest(faiss_file), "params": params},
        "store": layout.file_digest(store_file),
        "counts": {"documents": n_docs, "chunks": n_chunks},
    }


def _report(directory, old, added, skipped, chunks, prev, start) -> BuildReport:
    counts = prev["counts"]
    return BuildReport(directory, added, skipped, chunks, counts["documents"], counts["chunks"],
                       prev["faiss"]["params"]["type"], time.perf_counter() - start)
