"""Fixtures for the survey tests: a small real index over a deterministic, on-topic subset of the corpus."""
from __future__ import annotations

import json
import re
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
def survey_index(tmp_path_factory, corpus_path, minilm_path) -> Path:
    from retrieval import IndexConfig, build_index, read_documents

    tmp = tmp_path_factory.mktemp("survey-index")
    subset = corpus_subset(corpus_path, tmp / "subset.jsonl")
    build_index(read_documents([subset]), tmp / "index", IndexConfig(progress=False, max_seq_length=128))
    return tmp / "index"
