"""Fixtures for the survey tests: a small real index over a deterministic, on-topic subset of the corpus."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

# Papers on efficient / on-device inference: enough material for a 5-section survey on that topic,
# few enough to embed in well under a minute on 2 CPU cores.
SUBSET_PATTERN = re.compile(r"quantiz|speculative|on-device|edge device|kv cache|sparse attention|"
                            r"efficient inference|mobile|pruning|distillation", re.I)
SUBSET_SIZE = 240


def corpus_subset(corpus: Path, out: Path, size: int = SUBSET_SIZE) -> Path:
    """The first `size` corpus records whose title or abstract matches SUBSET_PATTERN, in file order."""
    kept = []
    with corpus.open() as f:
        for line in f:
            rec = json.loads(line)
            if SUBSET_PATTERN.search(rec["title"] + " " + rec["abstract"]):
                kept.append(line)
                if len(kept) == size:
                    break
    out.write_text("".join(kept))
    return out


@pytest.fixture(scope="session")
def survey_index(request, tmp_path_factory, corpus_path, minilm_path) -> Path:
    """Built once and kept in pytest's cache (keyed by the subset's content): embedding takes a minute."""
    from retrieval import IndexConfig, build_index, read_documents

    tmp = tmp_path_factory.mktemp("survey-subset")
    subset = corpus_subset(corpus_path, tmp / "subset.jsonl")
    digest = hashlib.sha256(subset.read_bytes()).hexdigest()[:12]
    cache = request.config.cache.mkdir(f"survey-index-{digest}") if request.config.cache else tmp
    index = cache / "index"
    if not (index / "manifest.json").exists():
        shutil.rmtree(index, ignore_errors=True)
        build_index(read_documents([subset]), index, IndexConfig(progress=False, max_seq_length=128))
    return index
