"""FAISS: a flat inner-product index for small corpora, IVF past a size threshold, and the search call."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from retrieval.config import FaissConfig


def _faiss():
    import faiss

    return faiss


def ivf_nlist(n: int, cfg: FaissConfig) -> int:
    """Number of IVF lists: the configured one, else ~4*sqrt(n), kept to >= 39 training points per list."""
    nlist = cfg.nlist or int(4 * math.sqrt(n))
    return max(1, min(nlist, n // 39))


def make_index(vectors: np.ndarray, cfg: FaissConfig):
    """A new index over `vectors` (float32, normalised) and its parameters for the manifest."""
    faiss = _faiss()
    n, dim = vectors.shape
    if n < cfg.ivf_threshold:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index, {"type": "flat-ip", "dim": dim}
    nlist = ivf_nlist(n, cfg)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample_n = min(n, max(cfg.train_sample, 39 * nlist))
    # A seeded sample keeps rebuilds of the same corpus identical.
    sample = vectors[np.sort(np.random.default_rng(0).choice(n, sample_n, replace=False))]
    index.train(sample)
    index.add(vectors)
    index.nprobe = cfg.nprobe
    return index, {"type": "ivf-flat-ip", "dim": dim, "nlist": nlist, "nprobe": cfg.nprobe,
                   "trained_on": sample_n, "ivf_threshold": cfg.ivf_threshold}


def extend_index(index, params: dict, vectors: np.ndarray, cfg: FaissConfig):
    """Add `vectors` after the existing rows; a flat index that crosses the threshold is rebuilt as IVF."""
    if params["type"] == "flat-ip" and index.ntotal + len(vectors) >= cfg.ivf_threshold:
        old = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.empty((0, index.d), np.float32)
        return make_index(np.vstack([old, vectors]), cfg)
    index.add(vectors)
    return index, params


def write_index(index, path: Path) -> None:
    _faiss().write_index(index, str(path))


def read_index(path: Path, params: dict):
    index = _faiss().read_index(str(path))
    if params.get("type") == "ivf-flat-ip":
        index.nprobe = int(params.get("nprobe", 16))
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each [len(queries), k]; rows are -1 where fewer than k results exist."""
    k = max(1, min(k, index.ntotal))
    return index.search(queries, k)
