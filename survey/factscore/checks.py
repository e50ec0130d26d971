"""Exact checks a similarity score cannot make: numbers and negation.

An embedding (or word-overlap) score says "this passage is about the same thing as the claim"; it barely moves
when a claim adds a "not" or changes "8-bit" to "31-bit". These two checks are cheap and exact, so the support
judges apply them to the evidence span the claim was matched to:
- every number in the claim must occur in that span (after dropping thousands separators);
- the claim and the clauses of the span it restates must hold the same number of negation cues (a claim that
  adds or drops a "not" states the opposite). Only the span's clauses that share words with the claim count:
  "While X mitigates this, they fail to Y" restated as "X mitigates this" dropped a clause, not a negation.
"""
from __future__ import annotations

import re

NEGATION_RE = re.compile(
    r"\b(?:not|no|never|cannot|without|neither|nor|none|unable|fails?|failed|lacks?|lacking)\b|n't\b", re.I)
NUMBER_RE = re.compile(r"(?<![A-Za-z])\d[\d,]*(?:\.\d+)?")
_CLAUSE_RE = re.compile(r"[,;:]\s+|(?<=[.!?])\s+|\s+(?=\b(?:while|whereas|but|although|though|yet)\b)", re.I)
ALIGNED = 0.3


def numbers(text: str) -> set[str]:
    """Numbers as written, thousands separators dropped (`1,000` = `1000`). Digits glued to letters on their
    left belong to a name and are skipped (`LLaMA2`); `GPT-4`'s 4 follows a hyphen and counts."""
    return {n.replace(",", "").rstrip(".") for n in NUMBER_RE.findall(text)}


def negations(text: str) -> int:
    return len(NEGATION_RE.findall(text))


def numbers_ok(claim: str, evidence: str) -> bool:
    return numbers(claim) <= numbers(evidence)


def clauses(text: str) -> list[str]:
    """A sentence cut at clause punctuation and contrast words (`, while`, `; but`): the units a claim may
    restate or leave out."""
    return [c for c in _CLAUSE_RE.split(text) if c and c.strip()]


def aligned_negations(claim: str, evidence: str) -> int:
    """Negation cues in the clauses of `evidence` that the claim restates (>= 30% of their content words occur
    in the claim); all of `evidence` when no clause qualifies."""
    from survey.factscore.evidence import overlap

    kept = [c for c in clauses(evidence) if overlap(c, claim) >= ALIGNED]
    return negations(" ".join(kept) if kept else evidence)


def negation_ok(claim: str, evidence: str) -> bool:
    return negations(claim) == aligned_negations(claim, evidence)


def problems(claim: str, evidence: str) -> list[str]:
    """What the exact checks find wrong with `claim` as a statement of `evidence` (empty: nothing)."""
    out = []
    missing = sorted(numbers(claim) - numbers(evidence))
    if missing:
        out.append(f"numbers not in the evidence: {', '.join(missing)}")
    if not negation_ok(claim, evidence):
        out.append(f"negation differs (claim {negations(claim)}, evidence {aligned_negations(claim, evidence)})")
    return out
