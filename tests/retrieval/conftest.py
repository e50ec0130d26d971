"""Retrieval fixtures: one real MiniLM index over a deterministic slice of the shared corpus, built once.

MiniLM on this project's 2 shared CPU cores embeds ~10-40 abstracts/s (measured), so the fast suite embeds
every 10th paper of arxiv_llm_mini.jsonl (300 papers) with a 64-word-piece window (title + the abstract's
opening). The full 3,000 papers at the model's own window run in the slow test.
"""
from __future__ import annotations

from pathlib import Path

import pytest

MINI_STRIDE = 10
MINI_SEQ = 64


@pytest.fixture(scope="session")
def corpus_docs(corpus_path):
    from retrieval.ingest import read_documents

    return list(read_documents([corpus_path]))


@pytest.fixture(scope="session")
def mini_docs(corpus_docs):
    return corpus_docs[::MINI_STRIDE]


@pytest.fixture(scope="session")
def mini_index(mini_docs, minilm_path, tmp_path_factory) -> Path:
    """Path of a built index over `mini_docs`; read-only: copy it (copy_index) before changing it."""
    from retrieval.builder import build_index
    from retrieval.config import IndexConfig

    directory = tmp_path_factory.mktemp("mini") / "index"
    build_index(mini_docs, directory, IndexConfig(max_seq_length=MINI_SEQ, progress=False))
    return directory
