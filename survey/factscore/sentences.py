"""Sentence splitting that keeps each sentence's `[n]` citation markers with it.

A marker that follows the full stop (`... attention. [3]`) belongs to the sentence before it, as does one
that ends it (`... attention [3].`). Common abbreviations (`e.g.`, `et al.`, `Fig.`) do not end a sentence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from survey.factscore.markdown import CITATION_RE, parse_citation_numbers

_ABBREVIATIONS = ("e.g.", "i.e.", "et al.", "etc.", "vs.", "fig.", "figs.", "eq.", "eqs.", "sec.",
                  "no.", "approx.", "cf.", "resp.", "dr.", "mr.", "ms.", "prof.", "st.", "tab.")
# A boundary: end punctuation, optional closing quote/bracket, whitespace, then something that can start a
# sentence (a capital, a digit, a quote, or a citation marker that we re-attach below).
_BOUNDARY_RE = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")
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


def split_raw(paragraph: str) -> list[str]:
    """Sentences of one paragraph as written (markers kept); marker-only pieces join the sentence before."""
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY_RE.finditer(paragraph):
        candidate = paragraph[start:match.start()].rstrip()
        tail = candidate.lower().rsplit(None, 1)[-1] if candidate.split() else ""
        if tail.endswith(_ABBREVIATIONS) or re.fullmatch(r"[a-z]\.", tail):
            continue
        pieces.append(paragraph[start:match.end()].strip())
        start = match.end()
    pieces.append(paragraph[start:].strip())
    # A piece made only of markers (`[3]` after the full stop) is glued to the previous sentence.
    merged: list[str] = []
    for piece in pieces:
        if merged and CITATION_RE.sub("", piece).strip(" .;,") == "":
            merged[-1] = f"{merged[-1]} {piece}"
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
