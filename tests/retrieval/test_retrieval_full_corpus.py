"""The acceptance run at full size: all 3,000 shared-corpus papers at the embedder's own window (slow on CPU)."""
from __future__ import annotations

import time

import pytest

from retrieval.builder import build_index
from retrieval.config import IndexConfig
from retrieval.index import Index


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~4,000 chunks at 256 word pieces: minutes on a free 2-core CPU, far more when shared
def test_retrieval_full_corpus_title_recall_at_5(corpus_docs, minilm_path, tmp_path):
    start = time.perf_counter()
    report = build_index(corpus_docs, tmp_path / "idx", IndexConfig(progress=False))
    build_s = time.perf_counter() - start
    index = Index.open(tmp_path / "idx")
    queries = corpus_docs[::60]
    assert len(queries) == 50 and len(index) == 3000
    dense = sum(d.id in [h.id for h in index.search(d.title, k=5)] for d in queries) / 50
    hybrid = sum(d.id in [h.id for h in index.search(d.title, k=5, hybrid=True)] for d in queries) / 50
    print(f"\nfull corpus: {report.total_chunks} chunks in {build_s:.0f}s "
          f"({len(corpus_docs) / build_s:.1f} papers/s); recall@5 dense {dense:.2f}, hybrid {hybrid:.2f}")
    assert dense >= 0.9 and hybrid >= 0.9
