"""The post-check: what no survey sentence may do, enforced after writing, whoever wrote the sentence.

Sentences carry their citations as `[@doc_id]` markers. `clean_parts` reads the whole survey in order and drops
a sentence that repeats an earlier one (same words, or content words all said before), has an unfilled
template slot ("contributes to the field of by"), or loops (a 4-gram said twice); the drops go to the trace.
"""
from __future__ import annotations

import re

from survey.citations import cited_ids
from survey.quality import has_hole, has_inner_repeat, repeats
from survey.section import SectionResult
from survey.text import sentences



def attach(text: str, ids: list[str]) -> str:
    """`text` as one sentence ending in its citation markers: 'X does Y [@a] [@b].'"""
    body = text.strip().rstrip(" .;,:")
    marks = " ".join(f"[@{i}]" for i in ids)
    return f"{body} {marks}.".replace(" .", ".") if marks else f"{body}."


def _split(text: str) -> list[str]:
    return [s for s in sentences(text) if s.strip()]


def clean_parts(parts: list[SectionResult]) -> tuple[list[SectionResult], list[str]]:
    """The parts with repeated, looping and unfilled sentences dropped (survey order), and what was dropped."""
    earlier: list[str] = []
    dropped: list[str] = []
    out = []
    for part in parts:
        kept = []
        for sent in _split(part.text):
            plain = re.sub(r"\[@[^\]\s]+\]", "", sent)
            reason = ("repeats an earlier sentence" if repeats(plain, earlier) else
                      "unfilled template" if has_hole(plain) else "loops" if has_inner_repeat(plain) else "")
            if reason:
                dropped.append(f"{part.title}: {reason}: {plain[:80]!r}")
                continue
            earlier.append(plain)
            kept.append(sent)
        text = " ".join(kept)
        out.append(part.model_copy(update={"text": text, "cited_ids": cited_ids(text)}))
    return out, dropped
