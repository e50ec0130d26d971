"""Retrieval fixtures: one real MiniLM index over a deterministic slice of the shared corpus, built once.

MiniLM on this project's 2 shared CPU cores embeds ~10-40 abstracts/s (measured), so the fast suite embeds
every 10th paper of arxiv_llm_mini.jsonl (300 papers) with a 64-word-piece window (title + the abstract's
opening). The full 3,000 papers at the model's own window run in the slow test.

Tests import `retrieval.<module>`, never bare `retrieval`: under pytest's default import mode this folder
(tests/retrieval, on sys.path via tests/) would shadow the package as a namespace package.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(lines: list[str], title: str | None = None) -> bytes:
    """PDF 1.4 bytes whose page shows `lines`; `title` goes into the document-info dictionary."""
    text_ops = " T* ".join(f"({_escape(line)}) Tj" for line in lines)
    content = f"BT /F1 12 Tf 14 TL 72 720 Td {text_ops} ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title:
        objects.append(f"<< /Title ({_escape(title)}) >>".encode("latin-1"))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    info = b" /Info %d 0 R" % len(objects) if title else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    return bytes(out)


def copy_index(src: Path, dst: Path) -> Path:
    """A private copy of an index directory, for tests that change or damage it."""
    shutil.copytree(src, dst)
    return dst


MINI_STRIDE = 10
MINI_SEQ = 64


@pytest.fixture(name="make_pdf")
def make_pdf_fixture():
    """`make_pdf(lines, title=None) -> bytes` (a fixture: test modules do not import each other here)."""
    return make_pdf


@pytest.fixture(name="copy_index")
def copy_index_fixture():
    """`copy_index(src, dst) -> dst`: a private copy of an index directory to change or damage."""
    return copy_index


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
