"""Meaning-changing edits of a true sentence (negation, a changed number), to test and calibrate judges.

A judge worth its name must score a sentence copied from its source above the same sentence negated or with a
number changed; these edits build such pairs from real abstracts (tests, `cpm bench factscore_calibration`).
"""
from __future__ import annotations

import re

_NEGATIONS = ((" is ", " is not "), (" are ", " are not "), (" can ", " cannot "),
              (" outperforms ", " does not outperform "), (" improves ", " does not improve "),
              (" reduces ", " does not reduce "), (" achieves ", " does not achieve "))
_HAS_NEGATION = re.compile(r"\b(not|no|never|cannot|without)\b")


def negate(sentence: str) -> str | None:
    """The sentence with its first negatable verb negated, or None."""
    for old, new in _NEGATIONS:
        if old in sentence:
            return sentence.replace(old, new, 1)
    return None


def change_number(sentence: str) -> str | None:
    """The sentence with its first stand-alone number changed (`8-bit` -> `31-bit`; `LLaMA2` untouched)."""
    match = re.search(r"(?<![\w.])\d+(?:\.\d+)?", sentence)
    if not match:
        return None
    value = match.group(0)
    new = str(int(value) * 3 + 7) if "." not in value else f"{float(value) * 3 + 1.3:.1f}"
    return sentence[:match.start()] + new + sentence[match.end():]


def candidate_sentence(abstract: str, need_number: bool) -> str | None:
    """A 10-30 word sentence of `abstract` that can be negated (or holds a number), free of LaTeX and of
    negations already (a second "not" is a pattern a small LM copies, which hides the edit)."""
    text = " ".join(abstract.split())
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
        words = sentence.split()
        if not 10 <= len(words) <= 30 or "$" in sentence or "\\" in sentence or not sentence.endswith("."):
            continue
        if _HAS_NEGATION.search(sentence):
            continue
        if change_number(sentence) if need_number else negate(sentence):
            return sentence
    return None
