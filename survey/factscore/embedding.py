"""`EmbeddingJudge`: the claim's meaning found in a passage (MiniLM cosine), with exact number/negation checks.

Each passage is cut into spans (its sentences and their longer clauses, each pair of neighbouring sentences,
and the paper's title);
the claim and every span are embedded by the sentence-transformers model retrieval already loaded
(all-MiniLM-L6-v2), and the claim is supported when its most similar span is at least `threshold` similar to
it **and** passes the exact checks (`checks.py`: the claim's numbers occur in the span, same count of
negation cues).
Similarity alone accepts a negated or number-changed claim (they embed almost like the original); the checks
alone accept any claim that happens to share numbers with an unrelated passage; together they separate the
calibration variants (docs/factscore.md, "Which judge").

Span vectors are kept by text, so a passage shared by many claims (a cited paper's abstract) is embedded
once per run; `judge_many` embeds all new texts of a batch of claims in one call, which is the seam for
judging claims in parallel.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from survey.factscore import checks
from survey.factscore.evidence import Passage
from survey.factscore.judge import Judgement
from survey.factscore.schemas import NOT_SUPPORTED, SUPPORTED
from survey.factscore.sentences import split_raw

THRESHOLD = 0.72  # cosine; fitted on corpus lines 0-1499 by `cpm bench factscore_calibration` (docs/factscore.md)
MIN_CLAUSE_WORDS = 5


class TextEncoder(Protocol):
    """What the judge needs of an embedder: `retrieval.embed.Embedder` satisfies it (rows L2-normalised)."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def spans_of(passage: Passage, pairs: bool = True) -> list[str]:
    """The pieces of a passage a claim may restate: its sentences, their clauses of 5+ words (a survey often
    keeps one clause of a long sentence), neighbouring pairs, and the title (a record passage holds it already,
    with the authors and year)."""
    sentences = split_raw(passage.text) or [passage.text]
    spans = sentences + [c for s in sentences for c in checks.clauses(s) if len(c.split()) >= MIN_CLAUSE_WORDS]
    if pairs:
        spans += [f"{a} {b}" for a, b in zip(sentences, sentences[1:])]
    if passage.title and not passage.id.endswith("#r"):
        spans.append(passage.title)
    return [s for s in dict.fromkeys(spans) if s.strip()]


class EmbeddingJudge:
    """Supported when a span of some passage is >= `threshold` similar to the claim and passes the checks."""

    def __init__(self, encoder: TextEncoder, threshold: float = THRESHOLD, exact_checks: bool = True,
                 pairs: bool = True):
        self.encoder, self.threshold, self.exact_checks, self.pairs = encoder, threshold, exact_checks, pairs
        self.name = f"embedding:{getattr(encoder, 'name', 'encoder')}:{threshold}:{'checks' if exact_checks else 'plain'}"
        self._vectors: dict[str, np.ndarray] = {}

    def _embed(self, texts: list[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if new:
            for text, vec in zip(new, self.encoder.encode(new)):
                self._vectors[text] = vec

    def judge(self, claim: str, passages: list[Passage]) -> Judgement:
        return self.judge_many([(claim, passages)])[0]

    def judge_many(self, items: list[tuple[str, list[Passage]]]) -> list[Judgement]:
        """Judgements of many (claim, passages) pairs; every new text among them is embedded in one call."""
        spans = {p.id: spans_of(p, self.pairs) for _, passages in items for p in passages}
        self._embed([claim for claim, _ in items] + [s for group in spans.values() for s in group])
        return [self._decide(claim, passages, spans) for claim, passages in items]

    def _decide(self, claim: str, passages: list[Passage], spans: dict[str, list[str]]) -> Judgement:
        if not passages:
            return Judgement(NOT_SUPPORTED, [], {"reason": "no evidence"})
        claim_vec = self._vectors[claim]
        per_passage: dict[str, float] = {}
        best_sim, best_passage, best_span = -1.0, passages[0].id, ""
        for passage in passages:
            for span in spans[passage.id]:
                sim = float(self._vectors[span] @ claim_vec)
                per_passage[passage.id] = max(per_passage.get(passage.id, -1.0), round(sim, 3))
                if sim > best_sim:
                    best_sim, best_passage, best_span = sim, passage.id, span
        # The checks read the span the claim matched best, not any span above the threshold: a negated claim's
        # best match is the sentence it negates, and another sentence that happens to agree on negation
        # must not rescue it.
        found = checks.problems(claim, best_span) if self.exact_checks else []
        label = SUPPORTED if best_sim >= self.threshold and not found else NOT_SUPPORTED
        detail = {"similarity": per_passage, "threshold": self.threshold, "best_span": best_span,
                  "best_similarity": round(best_sim, 3), "check_problems": found}
        return Judgement(label, [best_passage] if label == SUPPORTED else [], detail)
