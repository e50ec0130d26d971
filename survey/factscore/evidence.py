"""Evidence for a claim: passages of the cited documents first, then the index's top-k hits.

Cited documents are cut into passages of a few sentences and ranked against the claim by word overlap, so a
long paper contributes its relevant part rather than its first page. Passage ids are `DOCID#pN` for passages
of cited documents and `DOCID#cN` for index chunks (N = the index's chunk id).
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


def resolve_reference(index: Retriever, ref: Reference) -> Any | None:
    """The index document a references-list entry names: by arXiv id first, then by title."""
    for key in (ref.arxiv_id, ref.title):
        if key:
            doc = index.find(key)
            if doc is not None:
                return doc
    return None


def gather(claim: str, cited_docs: list[Any], index: Retriever | None, k: int = 3,
           per_doc: int = 2) -> tuple[list[Passage], list[Passage]]:
    """(cited passages, retrieved passages) for one claim; retrieved ones skip documents already cited."""
    cited: list[Passage] = []
    for doc in cited_docs:
        ranked = sorted(passages_of(doc), key=lambda p: -overlap(claim, p.text))
        cited.extend(ranked[:per_doc])
    retrieved: list[Passage] = []
    if index is not None and k > 0:
        cited_ids = {d.id for d in cited_docs}
        for hit in index.search(claim, k=k + len(cited_ids)):
            if hit.id in cited_ids:
                continue
            retrieved.append(Passage(id=f"{hit.id}#c{hit.chunk_id}", doc_id=hit.id, title=hit.title,
                                     text=" ".join(hit.text.split()), source="retrieved"))
            if len(retrieved) == k:
                break
    return cited, retrieved

