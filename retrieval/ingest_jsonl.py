"""JSON-lines records (the Kaggle arXiv dump, the arXiv API's output, a user's own JSONL) -> Documents."""
from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

from retrieval.errors import RetrievalError
from retrieval.ids import arxiv_id, arxiv_year, content_id
from retrieval.normalize import normalize_text, normalize_title
from retrieval.types import Document

FIELDS = ("id", "title", "abstract", "authors", "year", "url", "categories")
# Where each Document field is looked for when no --fields mapping names it; the Kaggle dump's names first.
_DEFAULT_SOURCES = {
    "id": ("id", "arxiv_id", "doc_id"),
    "title": ("title",),
    "abstract": ("abstract", "summary", "text", "body", "content"),
    "authors": ("authors",),
    "year": ("year", "published", "update_date"),
    "url": ("url", "link"),
    "categories": ("categories",),
}
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")


class InputFormatError(RetrievalError):
    """A record or file that cannot be read as the format its name says."""


def parse_fields(spec: str | None) -> dict[str, str]:
    """`--fields title=name,abstract=body` -> {"title": "name", "abstract": "body"}, checked against FIELDS."""
    if not spec:
        return {}
    mapping = {}
    for part in spec.split(","):
        key, sep, src = part.partition("=")
        key, src = key.strip(), src.strip()
        if not sep or not src or key not in FIELDS:
            raise RetrievalError(f"bad --fields entry {part!r}: use FIELD=json_key with FIELD one of {', '.join(FIELDS)}")
        mapping[key] = src
    return mapping


def read_jsonl(path: Path, fields: dict[str, str] | None = None) -> Iterator[Document]:
    """Yield one Document per record of a .jsonl/.json/.jsonl.gz file (a JSON array file is accepted too)."""
    for lineno, record in _records(path):
        try:
            doc = record_to_document(record, fields or {})
        except RetrievalError as exc:
            raise InputFormatError(f"{path}:{lineno}: {exc}") from None
        if doc is not None:
            yield doc


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            first = f.read(1)
            while first.isspace():
                first = f.read(1)
            if first == "[":  # a JSON array rather than lines
                items = json.loads(first + f.read())
                yield from ((i + 1, r) for i, r in enumerate(items))
                return
            rest = first + f.readline()
            for lineno, line in enumerate([rest, *f], start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputFormatError(f"{path}:{lineno}: not a JSON line ({exc.msg}); "
                                           "expected one JSON object per line") from None
                yield lineno, record
    except (OSError, UnicodeDecodeError, EOFError, json.JSONDecodeError) as exc:
        raise InputFormatError(f"cannot read {path} as JSON lines: {exc}") from None


def _pick(record: dict, field: str, fields: dict[str, str]):
    if field in fields:
        return record.get(fields[field])
    for key in _DEFAULT_SOURCES[field]:
        if record.get(key) not in (None, ""):
            return record[key]
    return None


def _authors(value, record: dict) -> str:
    if isinstance(value, list):  # ["A. Smith", ...] or the Kaggle "authors_parsed" [[last, first, suffix], ...]
        return ", ".join(v if isinstance(v, str) else " ".join(p for p in v[1::-1] if p) for v in value)
    if value:
        return normalize_text(str(value))
    parsed = record.get("authors_parsed")
    return _authors(parsed, {}) if parsed else ""


def _year(value, aid: str | None, record: dict) -> int | None:
    if aid:  # the id encodes the first submission; update_date is only the last revision
        return arxiv_year(aid)
    if isinstance(value, int):
        return value
    versions = record.get("versions")
    if not value and versions and isinstance(versions[0], dict):
        value = versions[0].get("created")
    m = _YEAR.search(str(value or ""))
    return int(m.group(1)) if m else None


def record_to_document(record: dict, fields: dict[str, str]) -> Document | None:
    """Map one JSON object to a Document; records without a title and text are skipped (None)."""
    if not isinstance(record, dict):
        raise RetrievalError("record is not a JSON object")
    title = normalize_title(str(_pick(record, "title", fields) or ""))
    text = normalize_text(str(_pick(record, "abstract", fields) or ""))
    if not title and not text:
        return None
    raw_id = _pick(record, "id", fields)
    aid = arxiv_id(str(raw_id)) if raw_id is not None else None
    doc_id = aid or (str(raw_id).strip() if raw_id not in (None, "") else content_id(title, text))
    url = _pick(record, "url", fields) or (f"https://arxiv.org/abs/{aid}" if aid else None)
    cats = _pick(record, "categories", fields) or ""
    if isinstance(cats, list):
        cats = " ".join(cats)
    return Document(id=doc_id, title=title or text[:80], authors=_authors(_pick(record, "authors", fields), record),
                    year=_year(_pick(record, "year", fields), aid, record), text=text,
                    url=str(url) if url else None, categories=str(cats))
