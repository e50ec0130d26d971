"""Citation checking: the pipeline, not the model, decides which retrieved document each sentence cites.

A section draft cites its numbered sources as `[n]`. `check_citations` parses those, drops numbers that
name no retrieved source, re-points or drops citations whose sentence shares no content with the cited
document, and cites the best-matching source on substantive uncited sentences. What survives is stored
as `[@doc_id]` markers, which survive renumbering and resume; `survey.render` turns them into `[n]`.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, Field

from survey.sources import Source
from survey.text import clean, content_words, sentences

_GROUP = re.compile(r"\[\s*(\d+(?:\s*(?:[-\u2013,;]|and)\s*\d+)*)\s*\]")
_MARKER = re.compile(r"\[@([^\]\s]+)\]")
_HEADING = re.compile(r"^\s*(#+\s|\*\*[^*]+\*\*\s*$)")
_REFS = re.compile(r"^\s*(#+\s*)?(references|sources|bibliography)\s*:?\s*$", re.I | re.M)
_SOURCE_ECHO = re.compile(r"^\s*\[\d+\]\s+\S.*$")  # a line that repeats a source-list entry
_LABEL = re.compile(r"\b(?:Abstract|Paper\s*(?:\[\d+\])?)\s*:\s*")  # prompt labels echoed into the prose
_STRAY = re.compile(r"\[(?![^\[\]]*\])|(?<!\[)(?<![\w@.\-])\](?!\()")  # brackets that open or close nothing

KEEP_OVERLAP = 2  # shared content words a citation needs to stand (fewer when the sentence is short)
ASSIGN_OVERLAP = 3  # shared content words before an uncited sentence gets a citation added


class CitationReport(BaseModel):
    """What the check did to one draft, for the revision prompt and the JSON trace."""

    text: str = Field(description="the checked text, citations as [@doc_id] markers")
    cited_ids: list[str] = Field(default_factory=list, description="distinct cited documents, first use first")
    dropped: list[str] = Field(default_factory=list, description="citations removed, with the reason")
    moved: int = 0
    added: int = 0
    grounded: int = Field(0, description="sentences appended to reach the minimum number of cited papers")

    def problems(self, min_distinct: int) -> list[str]:
        out = list(self.dropped)
        if not self.text.strip():
            out.append("the section is empty")
        if len(self.cited_ids) < min_distinct:
            out.append(f"only {len(self.cited_ids)} distinct sources are cited; cite at least {min_distinct}")
        return out


def expand_numbers(group: str) -> list[int]:
    """'1, 3-5' -> [1, 3, 4, 5] (ranges capped so a typo like 1-999 cannot explode)."""
    out: list[int] = []
    for part in re.split(r"\s*(?:,|;|and)\s*", group):
        lo, dash, hi = re.split(r"\s*([-\u2013])\s*", part) if re.search(r"[-\u2013]", part) else (part, "", "")
        if dash and lo.isdigit() and hi.isdigit() and 0 <= int(hi) - int(lo) <= 10:
            out.extend(range(int(lo), int(hi) + 1))
        elif part.strip().isdigit():
            out.append(int(part))
    return out


def parse_numbers(text: str) -> list[int]:
    return [n for m in _GROUP.finditer(text) for n in expand_numbers(m.group(1))]


def cited_ids(text: str) -> list[str]:
    """Distinct `[@doc_id]` markers in order of first use."""
    return list(dict.fromkeys(_MARKER.findall(text)))


def strip_scaffolding(draft: str) -> str:
    """Remove what the model adds around the prose: headings, an echoed source list, a references block."""
    m = _REFS.search(draft)
    if m:
        draft = draft[: m.start()]
    lines = [ln for ln in draft.splitlines() if not _HEADING.match(ln) and not _SOURCE_ECHO.match(ln)]
    return clean(_LABEL.sub("", _STRAY.sub("", " ".join(lines))))


def overlap(sentence: str, source: Source) -> int:
    return len(content_words(sentence) & content_words(source.title + " " + source.text))


def _best(sentence: str, sources: list[Source]) -> tuple[Source | None, int]:
    scored = [(overlap(sentence, s), -i, s) for i, s in enumerate(sources)]
    if not scored:
        return None, 0
    score, _, src = max(scored, key=lambda t: (t[0], t[1]))
    return src, score


def _dedupe(sents: list[str]) -> list[str]:
    # Small models loop; a sentence whose words were all said before adds nothing.
    seen: list[set[str]] = []
    out = []
    for s in sents:
        words = content_words(_GROUP.sub("", s))
        if words and any(words <= prev for prev in seen):
            continue
        seen.append(words)
        out.append(s)
    return out


def _collapse_clauses(sentence: str) -> str:
    """Drop clauses that repeat an earlier clause of the same run-on sentence (a small model's loop)."""
    out, seen = [], []
    for clause in re.split(r"(?<=[,;])\s+", sentence):
        words = content_words(_GROUP.sub("", clause))
        if words and any(words <= prev for prev in seen):
            continue
        seen.append(words)
        out.append(clause)
    return " ".join(out).rstrip(",; ")


def _attach(body: str, ids: list[str]) -> str:
    if not ids:
        return body
    marks = " ".join(f"[@{i}]" for i in ids)
    stripped = body.rstrip()
    if stripped and stripped[-1] in ".!?":
        return f"{stripped[:-1].rstrip()} {marks}{stripped[-1]}"
    return f"{stripped} {marks}."


def check_citations(draft: str, sources: list[Source], max_words: int | None = None) -> CitationReport:
    """Keep only citations that name a retrieved source relevant to their sentence (see module doc)."""
    report = CitationReport(text="")
    out_sentences: list[str] = []
    words = 0
    for sent in _dedupe(sentences(strip_scaffolding(draft))):
        sent = _collapse_clauses(sent)
        body = clean(_GROUP.sub("", _MARKER.sub("", sent)))
        body = re.sub(r"\s+([.,;:!?])", r"\1", body)
        if not content_words(body):
            continue
        need = min(KEEP_OVERLAP, max(1, len(content_words(body))))
        ids: list[str] = []
        for n in parse_numbers(sent):
            if not 1 <= n <= len(sources):
                report.dropped.append(f"[{n}] names no source (sources are [1]-[{len(sources)}])")
                continue
            src = sources[n - 1]
            if overlap(body, src) >= need:
                ids.append(src.id)
                continue
            best, score = _best(body, sources)
            if best is not None and score >= need:
                ids.append(best.id)
                report.moved += 1
            else:
                report.dropped.append(f"[{n}] does not match its sentence: {body[:60]!r}")
        if not ids:
            best, score = _best(body, sources)
            if best is not None and score >= ASSIGN_OVERLAP:
                ids.append(best.id)
                report.added += 1
        out_sentences.append(_attach(body, list(dict.fromkeys(ids))))
        words += len(body.split())
        if max_words and words >= max_words:
            break
    report.text = " ".join(out_sentences)
    report.cited_ids = cited_ids(report.text)
    return report


def numbered_sources(sources: list[Source], chars: int = 400) -> str:
    """The source list as the writing prompt shows it: `[n] Title (year): abstract excerpt`."""
    lines = []
    for i, s in enumerate(sources, 1):
        year = f" ({s.year})" if s.year else ""
        lines.append(f"[{i}] {s.title}{year}: {s.text[:chars]}")
    return "\n".join(lines)


def to_local(text: str, sources: list[Source]) -> str:
    """`[@doc_id]` markers back to the `[n]` numbers of `sources` (to show a checked draft to the model)."""
    number = {s.id: i for i, s in enumerate(sources, 1)}
    return _MARKER.sub(lambda m: f"[{number[m.group(1)]}]" if m.group(1) in number else "", text)
