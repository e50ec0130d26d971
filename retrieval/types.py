"""The records that cross retrieval's boundary: a `Document` going in, a `Hit` coming out."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Document:
    """One paper or file: the full record kept in the doc store (chunks point back to it by `id`)."""

    id: str               # arXiv id for arXiv records, else a stable content hash ("sha1:...")
    title: str
    authors: str = ""     # comma-separated, as in the arXiv dump
    year: int | None = None
    text: str = ""        # abstract for arXiv records, the full text for files and PDFs
    url: str | None = None
    categories: str = ""  # space-separated arXiv categories ("" when unknown)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Hit:
    """One search result: the best-matching chunk of one document."""

    id: str            # document id: the arXiv id for arXiv records, else a stable id
    chunk_id: int      # which chunk of the document matched (0-based)
    title: str
    authors: str       # comma-separated, as in the arXiv dump
    year: int | None
    text: str          # the chunk's text
    score: float
    url: str | None

    def to_dict(self) -> dict:
        return asdict(self)
