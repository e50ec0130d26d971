"""Scores over judged claims: FactScore (with and without FActScore's length penalty), citation P/R.

- FactScore: supported claims / all claims (an `unparsable` verdict counts as not supported; it is counted
  separately so a weak judge's failures are visible).
- Length penalty (Min et al., 2023): a text with fewer than `gamma` claims is multiplied by
  exp(1 - gamma / n), so saying little cannot buy a high score.
- Citation recall: claims that carry at least one citation marker / all claims.
- Citation precision: of the claims that carry markers, those that their cited papers' passages support
  (markers that resolve to no index document cannot support anything).
"""
from __future__ import annotations

import math
from typing import Iterable

from survey.factscore.schemas import SUPPORTED

GAMMA = 10


def length_penalty(n_claims: int, gamma: int = GAMMA) -> float:
    if n_claims <= 0:
        return 0.0
    return 1.0 if gamma <= 0 or n_claims >= gamma else math.exp(1 - gamma / n_claims)


def summarize(claims: Iterable[dict], gamma: int = GAMMA) -> dict:
    """Scores for a list of claim records (the `claims` entries of the report)."""
    claims = list(claims)
    n = len(claims)
    supported = sum(c["verdict"] == SUPPORTED for c in claims)
    cited = [c for c in claims if c["citations"]]
    cited_ok = sum(bool(c["supported_by_citation"]) for c in cited)
    score = supported / n if n else None
    return {
        "claims": n,
        "supported": supported,
        "unparsable": sum(c["verdict"] == "unparsable" for c in claims),
        "factscore": score,
        "factscore_length_penalized": score * length_penalty(n, gamma) if score is not None else None,
        "length_penalty": length_penalty(n, gamma),
        "gamma": gamma,
        "citation_precision": cited_ok / len(cited) if cited else None,
        "citation_recall": len(cited) / n if n else None,
        "claims_by_model": sum(c["method"] == "model" for c in claims),
    }


def per_section(claims: list[dict], gamma: int = GAMMA) -> list[dict]:
    """`summarize` for each section, in the survey's order."""
    order: list[str] = []
    for c in claims:
        if c["section"] not in order:
            order.append(c["section"])
    return [{"section": s, **summarize([c for c in claims if c["section"] == s], gamma)} for s in order]
