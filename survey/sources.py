"""Retrieved documents as survey sources: the retriever seam, de-duplication and reranking by a section goal.

survey/ never imports retrieval/: anything with `search(query, k) -> list[hit]`, whose hits carry `id`,
`title`, `authors`, `year`, `text`, `score` and `url`, is a retriever (retrieval.Index is one).
"""
from __future__ import annotations

import re
from typing import Any, Protocol

from pydantic import BaseModel, model_validator

from survey.errors import SurveyError
from survey.text import clean, content_words

# New-style arXiv ids (YYMM.NNNNN) encode the submission year; old style is archive/YYMMNNN.
_NEW_ARXIV = re.compile(r"^(\d{2})(\d{2})\.\d{4,5}(v\d+)?$")
_OLD_ARXIV = re.compile(r"^[a-z\-]+(\.[A-Z]{2})?/(\d{2})\d{5}(v\d+)?$")


class Retriever(Protocol):
    def search(self, query: str, k: int = 10) -> list[Any]: ...


class Source(BaseModel):
    """One retrieved document a section may cite."""

    id: str
    title: str
    authors: str = ""
    year: int | None = None
    url: str | None = None
    text: str = ""
    score: float = 0.0

    @model_validator(mode="after")
    def _year_from_id(self) -> "Source":
        if self.year is None:
            self.year = year_of(self.id, None)
        return self

    @property
    def arxiv_id(self) -> str | None:
        return self.id if is_arxiv_id(self.id) else None

    @property
    def first_author_surname(self) -> str:
        first = self.authors.split(",")[0].strip()
        return first.split()[-1] if first else "Anonymous"


def is_arxiv_id(doc_id: str) -> bool:
    return bool(_NEW_ARXIV.match(doc_id) or _OLD_ARXIV.match(doc_id))


def year_of(doc_id: str, year: int | None) -> int | None:
    """The record's year, else the one an arXiv id encodes (an arXiv dump often carries no year field)."""
    if year:
        return int(year)
    m = _NEW_ARXIV.match(doc_id)
    if m:
        return 2000 + int(m.group(1))
    m = _OLD_ARXIV.match(doc_id)
    if m:
        yy = int(m.group(2))
        return (1900 if yy >= 91 else 2000) + yy
    return None


def source_from_hit(hit: Any) -> Source:
    doc_id = str(hit.id)
    return Source(id=doc_id, title=clean(hit.title) or doc_id, authors=clean(getattr(hit, "authors", "") or ""),
                  year=year_of(doc_id, getattr(hit, "year", None)), url=getattr(hit, "url", None),
                  text=clean(getattr(hit, "text", "") or ""), score=float(getattr(hit, "score", 0.0) or 0.0))


def search(retriever: Retriever, query: str, k: int) -> list[Source]:
    """Search and turn hits into sources, one per document (the best-scoring chunk wins)."""
    best: dict[str, Source] = {}
    for hit in retriever.search(query, k=k):
        src = source_from_hit(hit)
        if src.id not in best or src.score > best[src.id].score:
            best[src.id] = src
    return sorted(best.values(), key=lambda s: -s.score)


def with_full_text(retriever: Retriever, sources: list[Source]) -> list[Source]:
    """Each source with its whole record's text (the abstract) instead of the matching chunk, where the retriever
    can look a document up (`get(doc_id)`, as retrieval.Index can); a sentence is written from the abstract."""
    get = getattr(retriever, "get", None)
    if get is None:
        return sources
    out = []
    for src in sources:
        doc = get(src.id)
        out.append(src.model_copy(update={"text": clean(doc.text)}) if doc is not None and doc.text else src)
    return out


def goal_overlap(goal: str, source: Source) -> float:
    """Share of the goal's content words found in the source's title and text."""
    goal_words = content_words(goal)
    if not goal_words:
        return 0.0
    return len(goal_words & content_words(source.title + " " + source.text)) / len(goal_words)


def rerank(goal: str, candidates: list[Source], keep: int, avoid: set[str] = frozenset()) -> list[Source]:
    """Dedupe by document id, then order by retrieval score plus agreement with the section goal.

    `avoid` (documents already used heavily elsewhere) is a soft penalty, not a filter: a small index may
    have nothing else to offer.
    """
    best: dict[str, Source] = {}
    for src in candidates:
        if src.id not in best or src.score > best[src.id].score:
            best[src.id] = src

    def key(src: Source) -> float:
        return src.score + goal_overlap(goal, src) - (0.25 if src.id in avoid else 0.0)

    return sorted(best.values(), key=key, reverse=True)[:keep]


def require_hits(sources: list[Source], what: str) -> list[Source]:
    if not sources:
        raise SurveyError(f"the index returned no documents for {what}: check that the index is not empty "
                          "(`cpm index info DIR`) and that the topic matches the corpus")
    return sources


def parse_queries(text: str, n: int) -> list[str]:
    """Up to `n` search queries from a line-per-query answer (bullets, numbers and quotes removed)."""
    out: list[str] = []
    for line in (text or "").splitlines():
        q = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)]|query\s*\d*\s*:)\s*", "", line, flags=re.I).strip(" \"'`")
        if q and len(q.split()) <= 16 and content_words(q) and q.lower() not in (o.lower() for o in out):
            out.append(q)
        if len(out) == n:
            break
    return out
