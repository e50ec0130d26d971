"""Support judges: given a claim and evidence passages, `supported` / `not supported` (or `unparsable`).

Three kinds share the `Judge` protocol:
- `ChatJudge`: asks a langchain chat model for a `Verdict` (constrained through `with_structured_output`
  when the model offers it; otherwise the reply is parsed strictly and anything else is `unparsable`).
- `NLIJudge`: wraps any natural-language-inference model the user has (`NLIModel.entailment`).
- `LexicalJudge`: no model; word coverage, numbers and negation against each passage. A fast baseline
  and a sanity check for the model judges, not a substitute for them.
- `LikelihoodJudge` (survey/factscore/likelihood.py): reads a causal LM's token log-probabilities; the one
  that separates true from altered claims with a 135M model (see docs/factscore.md).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from survey.factscore import prompts
from survey.factscore.evidence import Passage, content_words, overlap
from survey.factscore.schemas import NOT_SUPPORTED, SUPPORTED, Verdict
from survey.factscore.sentences import split_raw

UNPARSABLE = "unparsable"


@dataclass
class Judgement:
    label: str                      # SUPPORTED | NOT_SUPPORTED | UNPARSABLE
    evidence_ids: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)  # raw reply, scores: whatever explains the label

    def to_dict(self) -> dict:
        return asdict(self)


class Judge(Protocol):
    name: str  # part of the cache key: a different judge never reuses another's verdicts

    def judge(self, claim: str, passages: list[Passage]) -> Judgement: ...


class NLIModel(Protocol):
    """A user's entailment model: probability that `premise` entails `hypothesis`."""

    def entailment(self, premise: str, hypothesis: str) -> float: ...


def format_passages(passages: list[Passage]) -> str:
    return "\n".join(prompts.PASSAGE.format(id=p.id, title=p.title, text=p.text) for p in passages)


def parse_verdict(text: str, passage_ids: set[str]) -> Judgement:
    """Strict reading of a free-text reply: a `Verdict` JSON object, or exactly one of the two labels."""
    reply = text.strip()
    match = re.search(r"\{.*\}", reply, re.S)
    if match:
        try:
            verdict = Verdict.model_validate(json.loads(match.group(0)))
            ids = [i for i in verdict.evidence_ids if i in passage_ids]
            return Judgement(verdict.verdict, ids, {"raw": reply})
        except (json.JSONDecodeError, ValidationError):
            pass
    bare = reply.lower().strip(" .!\"'`*")
    if bare in (SUPPORTED, NOT_SUPPORTED):
        return Judgement(bare, [], {"raw": reply})
    return Judgement(UNPARSABLE, [], {"raw": reply[:500]})


class ChatJudge:
    """Judge with a langchain `BaseChatModel`; the verdict is constrained to the `Verdict` schema."""

    def __init__(self, llm: Any, model_name: str = "", structured: bool = True):
        self.llm = llm
        self.name = f"chat:{model_name or type(llm).__name__}:v{prompts.VERSION}"
        self._structured = None
        if structured:
            try:
                self._structured = llm.with_structured_output(Verdict, include_raw=True)
            except (NotImplementedError, TypeError, ValueError):
                self._structured = None  # no constrained decoding here: fall back to strict parsing

    def messages(self, claim: str, passages: list[Passage]) -> list[tuple[str, str]]:
        user = prompts.JUDGE_USER.format(passages=format_passages(passages), claim=claim)
        return [("system", prompts.JUDGE_SYSTEM), ("human", user)]

    def judge(self, claim: str, passages: list[Passage]) -> Judgement:
        ids = {p.id for p in passages}
        messages = self.messages(claim, passages)
        if self._structured is not None:
            out = self._structured.invoke(messages)
            parsed = out.get("parsed") if isinstance(out, dict) else out
            if isinstance(parsed, Verdict):
                return Judgement(parsed.verdict, [i for i in parsed.evidence_ids if i in ids],
                                 {"mode": "structured"})
            raw = out.get("raw") if isinstance(out, dict) else None
            text = getattr(raw, "content", "") if raw is not None else ""
            judgement = parse_verdict(text if isinstance(text, str) else str(text), ids)
            judgement.detail["mode"] = "structured-unparsed"
            return judgement
        reply = self.llm.invoke(messages)
        judgement = parse_verdict(str(reply.content), ids)
        judgement.detail["mode"] = "text"
        return judgement


class NLIJudge:
    """Supported when some passage entails the claim with probability >= `threshold`."""

    def __init__(self, model: NLIModel, name: str = "nli", threshold: float = 0.5):
        self.model, self.threshold = model, threshold
        self.name = f"nli:{name}:{threshold}"

    def judge(self, claim: str, passages: list[Passage]) -> Judgement:
        if not passages:
            return Judgement(NOT_SUPPORTED, [], {"reason": "no evidence"})
        scores = {p.id: float(self.model.entailment(p.text, claim)) for p in passages}
        best = max(scores, key=scores.get)
        label = SUPPORTED if scores[best] >= self.threshold else NOT_SUPPORTED
        return Judgement(label, [best] if label == SUPPORTED else [], {"entailment": scores})


_NEGATION = re.compile(r"\b(?:not|no|never|cannot|without|fails?|neither|nor|unable)\b|n't\b", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class LexicalJudge:
    """Supported when one passage covers the claim's content words, holds all its numbers and agrees on
    negation (both negated or neither, counted over the passage's best-matching sentence)."""

    def __init__(self, coverage: float = 0.8):
        self.coverage = coverage
        self.name = f"lexical:{coverage}"

    def _supports(self, claim: str, passage: Passage) -> bool:
        if overlap(claim, passage.text) < self.coverage:
            return False
        if not set(_NUMBER.findall(claim)) <= set(_NUMBER.findall(passage.text)):
            return False
        best = max(split_raw(passage.text) or [passage.text], key=lambda s: overlap(claim, s))
        return bool(_NEGATION.search(claim)) == bool(_NEGATION.search(best))

    def judge(self, claim: str, passages: list[Passage]) -> Judgement:
        if not content_words(claim):
            return Judgement(NOT_SUPPORTED, [], {"reason": "no content words"})
        ids = [p.id for p in passages if self._supports(claim, p)]
        return Judgement(SUPPORTED if ids else NOT_SUPPORTED, ids[:1],
                         {"coverage": {p.id: round(overlap(claim, p.text), 3) for p in passages}})
