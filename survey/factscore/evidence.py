"""Evidence for a claim: passages of the cited documents first, then the index's top-k hits.

Cited documents are cut into passages of a few sentences and ranked against the claim by word overlap, so a
long paper contributes its relevant part rather than its first page; each cited document also contributes its
record (authors, year, title). Passage ids are `DOCID#pN` for passages of cited documents, `DOCID#r` for the
record and `DOCID#cN` for index chunks (N = the index's chunk id).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from survey.factscore.markdown import Reference
from survey.factscore.sentences import split_raw

_STOP = frozenset("""a an the of and or in on for to with by from as at is are was were be been being this that these
those it its we our their they which who whom than then also can may such via into over under not no more most
less using use used based between both each other only very""".split())
PASSAGE_WORDS = 90  # ~ 3-4 sentences of an abstract: enough context, short enough for a small model


class Retriever(Protocol):
    """What FactScore needs of an index: `retrieval.Index` satisfies it."""

    def search(self, query: str, k: int = 10) -> list[Any]: ...
    def find(self, arxiv_id_or_title: str) -> Any | None: ...


@dataclass
class Passage:
    id: str
    doc_id: str
    title: str
    text: str
    source: str  # "cited" | "retrieved"

    def to_dict(self) -> dict:
        return asdict(self)


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower()) if w not in _STOP]


def overlap(claim: str, text: str) -> float:
    """Share of the claim's content words found in `text` (numbers must match exactly)."""
    words = content_words(claim)
    if not words:
        return 0.0
    have = Counter(content_words(text))
    return sum(1 for w in words if have[w]) / len(words)


def passages_of(doc: Any, max_words: int = PASSAGE_WORDS) -> list[Passage]:
    """Pack a document's sentences into passages of about `max_words` words."""
    sentences = split_raw(" ".join((doc.text or "").split())) or [doc.title]
    out, buf = [], []
    for sentence in sentences:
        if buf and sum(len(s.split()) for s in buf) + len(sentence.split()) > max_words:
            out.append(" ".join(buf))
            buf = []
        buf.append(sentence)
    if buf:
        out.append(" ".join(buf))
    return [Passage(id=f"{doc.id}#p{i}", doc_id=doc.id, title=doc.title, text=t, source="cited")
            for i, t in enumerate(out)]


def record_passage(doc: Any) -> Passage:
    """The paper's record as a passage (`Wen, Liang, Wu et al. (2025): Title`): the evidence for a sentence
    about who presented what, such as the survey writer's `Wen et al. (2025) present "Title" [1].`"""
    names = [n.strip() for n in (getattr(doc, "authors", "") or "").split(",") if n.strip()]
    who = ", ".join(names[:3]) + (" et al." if len(names) > 3 else "")
    year = getattr(doc, "year", None)
    head = " ".join(x for x in (who, f"({year})" if year else "") if x)
    text = f"{head}: {doc.title}" if head else doc.title
    return Passage(id=f"{doc.id}#r", doc_id=doc.id, title=doc.title, text=text, source="cited")


def resolve_reference(index: Retriever, ref: Reference) -> Any | None:
    """The index document a references-list entry names: by arXiv id first, then by title."""
    for key in (ref.arxiv_id, ref.title):
        if key:
            doc = index.find(key)
            if doc is not None:
                return doc
    return None


def cited_passages(claim: str, cited_docs: list[Any], per_doc: int = 2) -> list[Passage]:
    """Each cited document's `per_doc` passages that overlap the claim most, and its record."""
    out: list[Passage] = []
    for doc in cited_docs:
        ranked = sorted(passages_of(doc), key=lambda p: -overlap(claim, p.text))
        out.extend(ranked[:per_doc] + [record_passage(doc)])
    return out


def retrieved_passages(claim: str, index: Retriever | None, k: int = 3,
                       skip_docs: set[str] = frozenset()) -> list[Passage]:
    """The index's top-k chunks for the claim, from documents not in `skip_docs` (the cited ones)."""
    retrieved: list[Passage] = []
    if index is None or k <= 0:
        return retrieved
    for hit in index.search(claim, k=k + len(skip_docs)):
        if hit.id in skip_docs:
            continue
        retrieved.append(Passage(id=f"{hit.id}#c{hit.chunk_id}", doc_id=hit.id, title=hit.title,
                                 text=" ".join(hit.text.split()), source="retrieved"))
        if len(retrieved) == k:
            break
    return retrieved


def gather(claim: str, cited_docs: list[Any], index: Retriever | None, k: int = 3,
           per_doc: int = 2) -> tuple[list[Passage], list[Passage]]:
    """(cited passages, retrieved passages) for one claim; retrieved ones skip documents already cited."""
    return (cited_passages(claim, cited_docs, per_doc),
            retrieved_passages(claim, index, k, {d.id for d in cited_docs}))
