"""Index: build + search on real MiniLM embeddings of the shared corpus, incremental add, IVF, hybrid."""
from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval.index import Index
from retrieval.types import Hit
from retrieval.builder import EmbedderMismatchError, add_to_index
from retrieval.config import FaissConfig, IndexConfig
from retrieval.faiss_index import extend_index, make_index


def recall_at_5(index: Index, docs) -> float:
    """Share of title queries whose own paper is among the top 5 hits."""
    found = sum(doc.id in [h.id for h in index.search(doc.title, k=5)] for doc in docs)
    return found / len(docs)


def test_retrieval_title_recall_at_5(mini_index, mini_docs):
    queries = mini_docs[::6][:50]
    assert len(queries) == 50
    assert recall_at_5(Index.open(mini_index), queries) >= 0.9


def test_retrieval_hits_are_one_per_document_best_first(mini_index):
    index = Index.open(mini_index)
    hits = index.search("speculative decoding with a draft model", k=8)
    assert len(hits) == 8 and all(isinstance(h, Hit) for h in hits)
    assert len({h.id for h in hits}) == 8
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = hits[0]
    assert "specul" in (top.title + top.text).lower()
    assert top.url == f"https://arxiv.org/abs/{top.id}" and top.year in (2025, 2026) and top.authors


def test_retrieval_on_topic_queries(mini_index):
    index = Index.open(mini_index)
    for query, words in {"quantization of LLM weights to low bit-width": ("quant", "bit"),
                         "retrieval-augmented generation": ("retriev", "rag"),
                         "KV cache compression for long context": ("cache", "kv", "context")}.items():
        top = index.search(query, k=3)
        assert any(w in (h.title + h.text).lower() for h in top for w in words), query


def test_retrieval_hybrid_rrf(mini_index, mini_docs):
    index = Index.open(mini_index)
    doc = mini_docs[7]
    hits = index.search(doc.title, k=5, hybrid=True)
    assert hits[0].id == doc.id
    # RRF scores: both rankings first -> 2/61, the most any row can get.
    assert hits[0].score <= 2 / 61 + 1e-9 and hits[0].score > hits[-1].score
    assert index.search("the of and", k=3, hybrid=True)  # stop-words only: dense ranking alone


def test_retrieval_get_find_len(mini_index, mini_docs):
    index = Index.open(mini_index)
    doc = mini_docs[3]
    assert len(index) == len(mini_docs)
    assert index.get(doc.id).title == doc.title and index.get(doc.id).text == doc.text
    assert index.find(f"arXiv:{doc.id}v2").id == doc.id
    assert index.find(f"https://arxiv.org/abs/{doc.id}").id == doc.id
    assert index.find(doc.title.upper()).id == doc.id
    assert index.get("0000.00000") is None and index.find("no such paper") is None


def test_retrieval_bad_queries(mini_index):
    from retrieval.errors import RetrievalError

    index = Index.open(mini_index)
    with pytest.raises(RetrievalError, match="empty query"):
        index.search("   ")
    with pytest.raises(RetrievalError, match="k must be"):
        index.search("x", k=0)


def test_retrieval_incremental_add_skips_present(mini_index, corpus_docs, tmp_path, copy_index):
    directory = copy_index(mini_index, tmp_path / "idx")
    before = Index.open(directory)
    n0, gen0 = len(before), before.manifest["generation"]
    before.close()
    present = corpus_docs[0:50:10]                 # in the mini index already (every 10th paper)
    new = [corpus_docs[i] for i in (1, 2, 3, 11)]  # not in it
    report = add_to_index(present + new, directory, cfg=IndexConfig(progress=False))
    assert (report.added_docs, report.skipped_docs, report.total_docs) == (4, 5, n0 + 4)
    index = Index.open(directory)
    assert len(index) == n0 + 4 and index.manifest["generation"] == gen0 + 1
    assert index.search(new[2].title, k=3)[0].id == new[2].id
    files = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    assert files == [f"docs.g{gen0 + 1}.sqlite", f"index.g{gen0 + 1}.faiss", "manifest.json"]
    again = add_to_index(new, directory, cfg=IndexConfig(progress=False))
    assert (again.added_docs, again.skipped_docs) == (0, 4)
    assert Index.open(directory).manifest["generation"] == gen0 + 1  # nothing new: no new generation


def test_retrieval_other_embedder_refused(mini_index, corpus_docs, tmp_path, copy_index):
    directory = copy_index(mini_index, tmp_path / "idx")
    manifest = (directory / "manifest.json").read_bytes()
    with pytest.raises(EmbedderMismatchError, match="built with embedder 'minilm'"):
        add_to_index(corpus_docs[1:3], directory, embedder="/some/other/model")
    with pytest.raises(EmbedderMismatchError):
        Index.open(directory, embedder="bge-small")
    assert (directory / "manifest.json").read_bytes() == manifest


def test_retrieval_add_crossing_threshold_becomes_ivf(mini_index, corpus_docs, tmp_path, copy_index):
    directory = copy_index(mini_index, tmp_path / "idx")
    n_chunks = Index.open(directory).manifest["counts"]["chunks"]
    cfg = IndexConfig(progress=False, faiss=FaissConfig(ivf_threshold=n_chunks + 1, nprobe=4))
    add_to_index([corpus_docs[1], corpus_docs[2]], directory, cfg=cfg)
    index = Index.open(directory)
    params = index.manifest["faiss"]["params"]
    assert params["type"] == "ivf-flat-ip" and params["nprobe"] == 4 and params["nlist"] >= 1
    assert params["trained_on"] == index.faiss.ntotal and index.faiss.nprobe == 4
    assert index.search(corpus_docs[2].title, k=5)[0].id == corpus_docs[2].id
    info = json.loads((directory / "manifest.json").read_text())
    assert info["faiss"]["params"] == params


def test_retrieval_faiss_flat_below_ivf_above_threshold():
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((4000, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cfg = FaissConfig(ivf_threshold=3000, nprobe=8)
    flat, p_flat = make_index(vecs[:2000], cfg)
    assert p_flat == {"type": "flat-ip", "dim": 32}
    ivf, p_ivf = extend_index(flat, p_flat, vecs[2000:], cfg)
    assert p_ivf["type"] == "ivf-flat-ip" and p_ivf["nlist"] == 4000 // 39 and ivf.ntotal == 4000
    # 4*sqrt(n) = 252 lists would leave < 39 training points each; FAISS wants >= 39, so n // 39.
    _, rows = ivf.search(vecs[[5, 2500]], 1)  # rows keep their order across the rebuild
    assert rows[:, 0].tolist() == [5, 2500]
    more, p_more = extend_index(ivf, p_ivf, vecs[:10], cfg)
    assert more.ntotal == 4010 and p_more is p_ivf
