"""The traced query encoder: same vectors as sentence-transformers, and a search that never loads it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from retrieval.embed import Embedder
from retrieval.query_encoder import QueryEncoder, cache_dir

QUERIES = ("speculative decoding", "  Vázquez: ΚV-cache ≤ 4 GiB, 量化 (InfLLM v2)  ", "sparse attention " * 200, "a")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("window", [None, 64])
def test_query_encoder_matches_sentence_transformers(cache_home, minilm_path, window):
    first = Embedder("minilm", "cpu", window)
    assert first._query is None  # nothing cached yet: the first query runs on sentence-transformers...
    want = np.concatenate([first.encode_query(q) for q in QUERIES])
    assert (cache_dir(minilm_path) / "encoder.pt").is_file()  # ...and caches the trace for later ones
    second = Embedder("minilm", "cpu", window)
    assert second._query is not None and second._model is None
    assert (second.dim, second.max_seq_length) == (first.dim, first.max_seq_length)
    got = np.concatenate([second.encode_query(q) for q in QUERIES])
    assert got.dtype == np.float32 and got.shape == (len(QUERIES), 384)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_query_encoder_unreadable_cache_falls_back(cache_home, minilm_path):
    folder = cache_dir(minilm_path)
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text('{"ok": true, "dim": 384, "max_seq_length": 256}')
    (folder / "encoder.pt").write_bytes(b"not a torchscript archive")
    assert QueryEncoder.load(minilm_path, None) is None
    assert Embedder("minilm", "cpu").encode_query("kv cache").shape == (1, 384)


def test_search_process_loads_neither_sentence_transformers_nor_transformers(cache_home, mini_index):
    from retrieval.index import Index

    Index.open(mini_index, device="cpu").search("warm the cache", k=1)  # caches the trace, if not yet there
    code = ("import sys; from retrieval.index import Index; "
            f"hits = Index.open({str(mini_index)!r}, device='cpu').search('speculative decoding', k=3); "
            "assert len(hits) == 3; "
            "assert not {'sentence_transformers', 'transformers', 'sklearn'} & set(sys.modules)")
    env = {"XDG_CACHE_HOME": str(cache_home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and done.stderr == ""


def test_embedder_load_prints_no_weight_bar(cache_home, minilm_path):
    code = "from retrieval.embed import Embedder; Embedder('minilm', 'cpu').encode(['a b c'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"XDG_CACHE_HOME": str(cache_home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr
