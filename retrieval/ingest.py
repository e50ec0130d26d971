"""Turn the user's inputs (files and folders) into Documents, filtered by category and year, de-duplicated."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from retrieval.errors import RetrievalError
from retrieval.ingest_files import TEXT_SUFFIXES, read_pdf, read_text_file
from retrieval.ingest_jsonl import read_jsonl
from retrieval.types import Document

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")


@dataclass
class IngestFilter:
    """Which records to keep: any of `categories` (exact, or a prefix like `cs`), years in [year_min, year_max]."""

    categories: tuple[str, ...] = ()
    year_min: int | None = None
    year_max: int | None = None
    limit: int | None = None  # stop after this many documents (quick trials on a big dump)

    def keep(self, doc: Document) -> bool:
        if self.categories:
            cats = doc.categories.split()
            if not any(c == want or c.startswith(want + ".") for c in cats for want in self.categories):
                return False
        if self.year_min is not None and (doc.year is None or doc.year < self.year_min):
            return False
        if self.year_max is not None and (doc.year is None or doc.year > self.year_max):
            return False
        return True


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".pdf"):
        return "pdf"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def _files(inputs: Iterable[Path]) -> Iterator[Path]:
    for path in inputs:
        path = Path(path).expanduser()
        if not path.exists():
            raise RetrievalError(f"input {path} does not exist")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) and not p.name.startswith("."))
            if not found:
                raise RetrievalError(f"folder {path} has no .jsonl/.md/.txt/.pdf files")
            yield from found
        elif _kind(path) is None:
            raise RetrievalError(f"{path}: unknown input type; use .jsonl/.json(.gz), .md/.txt or .pdf")
        else:
            yield path


def read_documents(inputs: Iterable[Path], fields: dict[str, str] | None = None,
                   filt: IngestFilter | None = None) -> Iterator[Document]:
    """All documents in `inputs`, in a deterministic order, each id once (the first record wins)."""
    filt = filt or IngestFilter()
    seen: set[str] = set()
    count = 0
    for path in _files(inputs):
        kind = _kind(path)
        if kind == "jsonl":
            docs: Iterable[Document | None] = read_jsonl(path, fields)
        elif kind == "pdf":
            docs = [read_pdf(path)]
        else:
            docs = [read_text_file(path)]
        for doc in docs:
            if doc is None or doc.id in seen or not filt.keep(doc):
                continue
            seen.add(doc.id)
            yield doc
            count += 1
            if filt.limit is not None and count >= filt.limit:
                return
