"""Real peers for the opt-in tests (`make test-peers`): vLLM for CPUs and llama.cpp's llama-server, installed into
.peers/ by bench/peers/install.sh, each started on a loopback port with the default model. A peer that is not
installed skips its tests with the reason; every test here is `slow`."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from peer_helpers import start_peer

# Papers on efficient inference: enough for a 3-section survey, few enough to embed in about a minute.
SUBSET = re.compile(r"quantiz|speculative|kv cache|sparse attention|efficient inference|pruning|distillation", re.I)


@pytest.fixture(scope="session")
def peer_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("peer-logs")


@pytest.fixture(scope="module", params=["vllm", "llama-server"])
def peer(request, peer_logs):
    """One real peer (module-scoped: each module's tests run against vLLM, then against llama-server)."""
    server = start_peer(request.param, peer_logs).ready()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def peers_index(request, tmp_path_factory, corpus_path, minilm_path) -> Path:
    """A small real FAISS index over an on-topic subset of the shared corpus, cached across runs."""
    from retrieval import IndexConfig, build_index, read_documents

    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    cache = cache.mkdir("peers-index") if cache else tmp_path_factory.mktemp("idx")
    index = cache / "index"
    if not (index / "ids.txt").exists():  # written last: a partly built index is built again
        shutil.rmtree(index, ignore_errors=True)
        kept = []
        with corpus_path.open() as f:
            for line in f:
                rec = json.loads(line)
                if SUBSET.search(rec["title"] + " " + rec["abstract"]):
                    kept.append(line)
                    if len(kept) == 160:
                        break
        with tempfile.TemporaryDirectory() as tmp:
            subset = Path(tmp) / "subset.jsonl"
            subset.write_text("".join(kept))
            build_index(read_documents([subset]), index, IndexConfig(progress=False, max_seq_length=128))
        (index / "ids.txt").write_text("\n".join(json.loads(line)["id"] for line in kept))
    return index
