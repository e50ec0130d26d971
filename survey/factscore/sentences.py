"""Sentence splitting that keeps each sentence's `[n]` citation markers with it.

A marker that follows the full stop (`... attention. [3]`) belongs to the sentence before it, as does one
that ends it (`... attention [3].`). Abbreviations (`e.g.`, `i.e.`, `et al.`, `Fig.`, `Eq.`, `vs.`, initials)
do not end a sentence, and neither does a full stop inside a quoted title or a short parenthetical: the survey
writer's own `Kobus et al. (2025) present "Title. Subtitle" [3].` is one sentence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from survey.factscore.markdown import CITATION_RE, parse_citation_numbers

_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "etc.", "vs.", "fig.", "figs.", "eq.", "eqs.", "sec.", "secs.",
                  "no.", "approx.", "cf.", "resp.", "dr.", "mr.", "ms.", "prof.", "st.", "tab.", "al.", "ref.",
                  "refs.", "ch.", "vol.", "pp.", "eds.", "ed.", "incl.", "w.r.t.")
# A boundary: end punctuation, optional closing quote/bracket, whitespace, then something that can start a
# sentence (a capital, a digit, a quote, or a citation marker that we re-attach below).
_BOUNDARY_RE = re.compile(r"(?<=[.!?])[\"'”)\]]?\s+(?=[A-Z0-9\"'“(\[])")
# Spans a boundary never falls inside: a quoted title ("Fast Attention. A Study") and a short parenthetical
# ("(see Fig. 3. Left)"); unbalanced quotes protect nothing, so one stray quote cannot swallow a paragraph.
_PROTECTED_RE = re.compile(r"\"[^\"]{1,300}\"|“[^”]{1,300}”|\([^()]{1,300}\)")
_INITIALS_RE = re.compile(r"(?:[a-z]\.)+")  # `J.`, `u.s.`, `a.k.a.`: initials, not sentence ends
_LEADING_MARKERS_RE = re.compile(r"^((?:\[\d[\d,;\-– ]*\]\s*)+)(?=[A-Z])")
MIN_WORDS = 3  # fragments shorter than this carry no checkable claim (`See [2].` still counts: 2 words + cite)


@dataclass
class Sentence:
    """A sentence with its markers removed from `text` and kept, in order, in `citations`."""

    section: str
    index: int         # position in the survey (0-based, over all sections)
    raw: str           # as written, markers included
    text: str          # markers removed
    citations: list[int]
    segments: list[tuple[str, list[int]]]  # text pieces each closed by a marker group, for claim attribution


def _is_abbreviation(before: str) -> bool:
    """Does the text before a full stop end in an abbreviation (`Kobus et al.`, `e.g.`, `Fig.`, `J.`)?"""
    words = before.lower().split()
    if not words:
        return False
    tail = words[-1].lstrip("(\"'“[")
    return tail in _ABBREVIATIONS or bool(_INITIALS_RE.fullmatch(tail))


def _protected(paragraph: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _PROTECTED_RE.finditer(paragraph)]


def split_raw(paragraph: str) -> list[str]:
    """Sentences of one paragraph as written (markers kept).

    Never split after an abbreviation (`et al.`, `e.g.`, `Fig.`, initials) nor inside a quoted title or a
    short parenthetical; markers after the full stop (`... attention. [3]`) join the sentence before, also
    when the next sentence follows them on the same line (`... attention. [3] Next ...`).
    """
    spans = _protected(paragraph)
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY_RE.finditer(paragraph):
        cut = match.start()
        if _is_abbreviation(paragraph[start:cut]):
            continue
        # inside a protected span: only its closing quote/bracket may end a sentence (`... "A Study."`)
        if any(a < cut < b - 1 for a, b in spans):
            continue
        pieces.append(paragraph[start:match.end()].strip())
        start = match.end()
    pieces.append(paragraph[start:].strip())
    merged: list[str] = []
    for piece in pieces:
        lead = _LEADING_MARKERS_RE.match(piece)
        if merged and lead:  # `[3] Next sentence`: the markers close the sentence before
            merged[-1] = f"{merged[-1]} {lead.group(1).strip()}"
            piece = piece[lead.end():]
        if merged and CITATION_RE.sub("", piece).strip(" .;,") == "":
            merged[-1] = f"{merged[-1]} {piece}".strip()  # a piece made only of markers
        elif piece:
            merged.append(piece)
    return merged


def _segments(raw: str) -> list[tuple[str, list[int]]]:
    """Cut a sentence after each marker group: `A does X [1], while B does Y [2].` -> two segments."""
    segments, start, pending = [], 0, []
    for match in CITATION_RE.finditer(raw):
        pending.extend(parse_citation_numbers(match.group(1)))
        gap = raw[match.end():]
        if re.match(r"\s*\[\d", gap):  # `[1][2]`: same group
            continue
        segments.append((CITATION_RE.sub("", raw[start:match.end()]).strip(" ,;"), pending))
        start, pending = match.end(), []
    rest = CITATION_RE.sub("", raw[start:]).strip(" ,;.")
    if rest:
        segments.append((rest, []))
    return segments


def clean(text: str) -> str:
    """Markers removed and whitespace collapsed (`attention [3].` -> `attention.`)."""
    text = CITATION_RE.sub("", text)
    text = re.sub(r"\s+([.,;:!?)])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(section: str, body: str, start_index: int = 0) -> list[Sentence]:
    """Sentences of a section body; paragraphs (blank-line separated) never share a sentence."""
    out: list[Sentence] = []
    for paragraph in re.split(r"\n\s*\n", body):
        paragraph = " ".join(paragraph.split())
        for raw in split_raw(paragraph):
            text = clean(raw)
            if len(re.findall(r"\w+", text)) < MIN_WORDS:
                continue
            citations: list[int] = []
            for match in CITATION_RE.finditer(raw):
                citations.extend(n for n in parse_citation_numbers(match.group(1)) if n not in citations)
            out.append(Sentence(section=section, index=start_index + len(out), raw=raw, text=text,
                                citations=citations, segments=_segments(raw)))
    return out
