"""Retrieval: documents -> chunks -> embeddings -> FAISS index + SQLite doc store; `Index.open(dir).search(q)`.

Import-light: names are loaded on first use, so `import retrieval` pulls in neither faiss nor torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Index": "retrieval.index",
    "Hit": "retrieval.types",
    "Document": "retrieval.types",
    "IndexConfig": "retrieval.config",
    "ChunkConfig": "retrieval.config",
    "FaissConfig": "retrieval.config",
    "build_index": "retrieval.builder",
    "add_to_index": "retrieval.builder",
    "read_documents": "retrieval.ingest",
    "IngestFilter": "retrieval.ingest",
    "RetrievalError": "retrieval.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
