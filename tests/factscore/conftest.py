"""FactScore fixtures: survey texts built from real corpus abstracts, and a small real index over them.

Three texts share the same papers: `faithful` copies one sentence of each cited abstract, `altered` negates
it or changes its number, `wrong_cites` keeps the faithful sentences but cites the next paper's reference.
The index holds those papers plus distractors (every 150th paper), embedded by MiniLM with a short window
so it builds in seconds on 2 shared cores.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# pytest puts tests/ first on sys.path, where tests/engine/ etc. (no __init__.py) pass for namespace packages
# that shadow the editable install; the repo root goes first, and an impostor imported earlier is dropped
# (the same fix as tests/engine/conftest.py; the lasting one is `pythonpath = ["."]` in pyproject).
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
for _pkg in ("engine", "retrieval", "survey", "agents"):
    if _pkg in sys.modules and getattr(sys.modules[_pkg], "__file__", None) is None:
        for _name in [n for n in sys.modules if n == _pkg or n.startswith(_pkg + ".")]:
            del sys.modules[_name]

from survey.factscore.perturb import candidate_sentence, change_number, negate

N_PAPERS = 4


def reference(n: int, doc) -> str:
    return f"[{n}] {doc.title.rstrip('.')}. {doc.authors}, {doc.year}. arXiv:{doc.id}"


def survey_text(sentences: list[str], docs: list, cite: list[int]) -> str:
    half = len(sentences) // 2
    body = [f"{s[:-1]} [{cite[i]}]." for i, s in enumerate(sentences)]
    refs = "\n".join(reference(i + 1, d) for i, d in enumerate(docs))
    return (f"# A test survey\n\n## Methods\n{' '.join(body[:half])}\n\n## Results\n{' '.join(body[half:])}\n\n"
            f"## References\n{refs}\n")


@pytest.fixture(scope="session")
def fs_docs(corpus_path):
    from retrieval.ingest import read_documents

    return list(read_documents([corpus_path]))


@pytest.fixture(scope="session")
def fs_papers(fs_docs):
    """[(doc, copied sentence, altered sentence)] for N_PAPERS papers, alternating negation / number change."""
    out = []
    for doc in fs_docs[7::61]:
        need_number = len(out) % 2 == 1
        sentence = candidate_sentence(doc.text, need_number)
        if sentence is None:
            continue
        out.append((doc, sentence, change_number(sentence) if need_number else negate(sentence)))
        if len(out) == N_PAPERS:
            return out
    pytest.skip("the corpus has too few usable sentences")


@pytest.fixture(scope="session")
def fs_texts(fs_papers) -> dict[str, str]:
    docs = [d for d, _, _ in fs_papers]
    copied = [s for _, s, _ in fs_papers]
    altered = [a for _, _, a in fs_papers]
    own = list(range(1, N_PAPERS + 1))
    shifted = [n % N_PAPERS + 1 for n in own]  # paper i's sentence cites paper i+1
    return {"faithful": survey_text(copied, docs, own), "altered": survey_text(altered, docs, own),
            "wrong_cites": survey_text(copied, docs, shifted)}


@pytest.fixture(scope="session")
def fs_index_dir(fs_docs, fs_papers, minilm_path, tmp_path_factory):
    from retrieval.builder import build_index
    from retrieval.config import IndexConfig

    papers = [d for d, _, _ in fs_papers]
    ids = {d.id for d in papers}
    docs = papers + [d for d in fs_docs[::150] if d.id not in ids]
    directory = tmp_path_factory.mktemp("factscore") / "index"
    build_index(docs, directory, IndexConfig(max_seq_length=64, progress=False))
    return directory


@pytest.fixture(scope="session")
def fs_index(fs_index_dir):
    from retrieval.index import Index

    return Index.open(fs_index_dir)
