"""Markdown/text files and PDFs -> Documents (full text; chunking cuts them later)."""
from __future__ import annotations

import re
from pathlib import Path

from retrieval.errors import RetrievalError
from retrieval.ids import content_id
from retrieval.normalize import normalize_text, normalize_title
from retrieval.types import Document

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".rst")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def read_text_file(path: Path) -> Document | None:
    """A Markdown or text file: the title is its first heading (or first line), the id a content hash."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RetrievalError(f"{path} is not UTF-8 text; convert it or leave it out") from None
    return _document(raw, path)


def read_pdf(path: Path) -> Document | None:
    """A PDF's extracted text (pypdf); the title comes from its metadata, else its first line."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise RetrievalError(f"{path} is encrypted; decrypt it first (e.g. `qpdf --decrypt`)")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise RetrievalError(f"cannot read PDF {path}: {exc}; fix or remove the file") from None
    raw = "\n".join(pages)
    if not raw.strip():
        # A scanned PDF without a text layer: nothing to index, say so rather than index an empty record.
        raise RetrievalError(f"{path} has no extractable text (scanned?); OCR it first or leave it out")
    return _document(raw, path, title=meta_title)


def _document(raw: str, path: Path, title: str = "") -> Document | None:
    lines = [line for line in raw.splitlines() if line.strip()]
    if not lines:
        return None
    if not title:
        m = _HEADING.match(lines[0])
        title = m.group(1) if m else (lines[0] if len(lines[0]) <= 200 else path.stem)
    title = normalize_title(title) or path.stem
    text = normalize_text(raw)
    return Document(id=content_id(title, text), title=title, text=text, url=path.resolve().as_uri())
