"""`Index`: open an index directory (checked against its manifest) and search it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from retrieval import faiss_index, layout
from retrieval.errors import RetrievalError
from retrieval.ids import arxiv_id
from retrieval.store import DocStore
from retrieval.types import Document, Hit

RRF_K = 60  # the constant of Cormack et al. (2009); damps the weight of the very top ranks


class Index:
    """A read-only view of one index generation; `search` embeds the query with the index's own embedder."""

    def __init__(self, directory: Path, manifest: dict, faiss, store: DocStore, device: str = "auto"):
        self.directory = directory
        self.manifest = manifest
        self.faiss = faiss
        self.store = store
        self.device = device
        self._embedder = None
        self._bm25 = None

    @classmethod
    def open(cls, directory, embedder: str | None = None, device: str = "auto") -> "Index":
        """Open and check an index; RetrievalError on missing/corrupt/mismatched files or another embedder."""
        directory = Path(directory).expanduser()
        manifest = layout.read_manifest(directory)
        built_with = manifest["embedder"].get("name")
        if embedder is not None and embedder != built_with:
            from retrieval.builder import EmbedderMismatchError

            raise EmbedderMismatchError(f"index {directory} was built with embedder {built_with!r}, not {embedder!r}; "
                                        "search it with the same embedder or build a new index")
        faiss_file = layout.verify_file(directory, manifest["faiss"], "FAISS")
        store_file = layout.verify_file(directory, manifest["store"], "doc store")
        try:
            index = faiss_index.read_index(faiss_file, manifest["faiss"].get("params", {}))
        except RuntimeError as exc:
            raise layout.CorruptIndexError(f"cannot read FAISS file {faiss_file}: {exc}; rebuild the index") from None
        store = DocStore(store_file, readonly=True)
        n_docs, n_chunks = store.counts()
        counts = manifest["counts"]
        problems = []
        if index.d != manifest["embedder"].get("dim"):
            problems.append(f"FAISS dimension {index.d} != manifest's {manifest['embedder'].get('dim')}")
        if not index.ntotal == n_chunks == counts.get("chunks"):
            problems.append(f"{index.ntotal} vectors, {n_chunks} stored chunks, manifest says {counts.get('chunks')}")
        if n_docs != counts.get("documents"):
            problems.append(f"{n_docs} stored documents, manifest says {counts.get('documents')}")
        if problems:
            store.close()
            raise layout.CorruptIndexError(f"index {directory} is inconsistent ({'; '.join(problems)}); rebuild it")
        return cls(directory, manifest, index, store, device)

    @property
    def store_path(self) -> Path:
        return self.store.path

    def close(self) -> None:
        self.store.close()

    def __len__(self) -> int:
        return int(self.manifest["counts"]["documents"])

    def info(self) -> dict:
        """The manifest plus the directory: what `cpm index info` prints."""
        return {"directory": str(self.directory), **self.manifest}

    def get(self, doc_id: str) -> Document | None:
        """The full record of one document, or None."""
        return self.store.get(doc_id)

    def find(self, arxiv_id_or_title: str) -> Document | None:
        """Look a paper up by arXiv id (any form: 2503.14620v2, arXiv:..., abs URL), stored id, or exact title."""
        s = arxiv_id_or_title.strip()
        aid = arxiv_id(s)
        return (aid and self.store.get(aid)) or self.store.get(s) or self.store.find_title(s)

    def _embed(self, query: str) -> np.ndarray:
        if self._embedder is None:
            from retrieval.embed import Embedder

            emb = self.manifest["embedder"]
            self._embedder = Embedder(emb["name"], self.device, emb.get("max_seq_length"))
            if self._embedder.dim != emb["dim"]:
                raise RetrievalError(f"embedder {emb['name']!r} gives {self._embedder.dim}-d vectors; the index "
                                     f"holds {emb['dim']}-d ones: it was built with another model of that name")
        return self._embedder.encode_query(query)

    def dense_rows(self, query: str, n: int) -> list[tuple[int, float]]:
        """The `n` nearest chunk rows to `query` with their cosine scores, best first."""
        scores, rows = faiss_index.search(self.faiss, self._embed(query), n)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def search(self, query: str, k: int = 10, hybrid: bool = False) -> list[Hit]:
        """The `k` best documents for `query`, one hit each (its best chunk), best first.

        Dense: cosine similarity of normalised embeddings. Hybrid: dense and BM25 rankings fused by
        reciprocal rank fusion (score = sum of 1/(60 + rank)).
        """
        if not query or not query.strip():
            raise RetrievalError("empty query; give some words to search for")
        if k < 1:
            raise RetrievalError(f"k must be at least 1, not {k}")
        total = self.faiss.ntotal
        n = min(total, max(4 * k, 50))
        while True:
            ranked = self._fused(query, n) if hybrid else self.dense_rows(query, n)
            hits = self._hits(ranked, k)
            # Long documents have many chunks: widen the net until k distinct documents are found.
            if len(hits) >= k or n >= total:
                return hits
            n = min(total, n * 4)

    def _fused(self, query: str, n: int) -> list[tuple[int, float]]:
        if self._bm25 is None:
            from retrieval.hybrid import BM25

            self._bm25 = BM25(self.store.all_chunks())
        fused: dict[int, float] = {}
        for ranking in (self.dense_rows(query, n), self._bm25.top(query, n)):
            for rank, (row, _) in enumerate(ranking):
                fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank + 1)
        return sorted(fused.items(), key=lambda rs: -rs[1])

    def _hits(self, ranked: list[tuple[int, float]], k: int) -> list[Hit]:
        chunks = self.store.chunks_for_rows([r for r, _ in ranked])
        best: list[tuple[str, int, str, float]] = []
        seen: set[str] = set()
        for row, score in ranked:
            doc_id, chunk_no, text = chunks[row]
            if doc_id not in seen:
                seen.add(doc_id)
                best.append((doc_id, chunk_no, text, score))
                if len(best) == k:
                    break
        meta = self.store.docs_meta(d for d, *_ in best)
        return [Hit(id=d, chunk_id=c, title=meta[d].title, authors=meta[d].authors, year=meta[d].year,
                    text=t, score=s, url=meta[d].url) for d, c, t, s in best]
