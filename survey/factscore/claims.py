"""Atomic claims of a sentence: extracted by the chat model (few-shot), with sentence-as-claim fallback.

A 135M model often returns nothing, repeats the examples or invents facts; its claims are kept only when
each one is drawn from the sentence (most of its content words occur in it). Otherwise the sentence itself
is the claim, and `method` says so in the report. Each claim carries the citation markers of the sentence
segment(s) it came from.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from survey.factscore import prompts
from survey.factscore.evidence import content_words, overlap
from survey.factscore.schemas import AtomicClaims
from survey.factscore.sentences import Sentence

MIN_DRAWN = 0.7   # share of a claim's content words that must occur in its sentence
MAX_CLAIMS = 8


@dataclass
class Claim:
    text: str
    citations: list[int]
    sentence: Sentence
    method: str  # "model" | "sentence"


def extraction_messages(sentence: str) -> list[tuple[str, str]]:
    messages: list[tuple[str, str]] = [("system", prompts.EXTRACT_SYSTEM)]
    for user, assistant in prompts.EXTRACT_EXAMPLES:
        messages += [("human", prompts.EXTRACT_USER.format(sentence=user)), ("ai", assistant)]
    messages.append(("human", prompts.EXTRACT_USER.format(sentence=sentence)))
    return messages


def _ask(llm: Any, sentence: str) -> list[str] | None:
    """The model's claims, or None when it gave nothing usable."""
    messages = extraction_messages(sentence)
    try:
        structured = llm.with_structured_output(AtomicClaims)
    except (NotImplementedError, TypeError, ValueError):
        structured = None
    if structured is not None:
        try:
            out = structured.invoke(messages)
            return list(out.claims) if isinstance(out, AtomicClaims) else None
        except (ValidationError, ValueError):
            return None  # OutputParserException is a ValueError
    text = str(llm.invoke(messages).content)
    match = re.search(r"\{.*\}", text, re.S)
    try:
        return list(AtomicClaims.model_validate(json.loads(match.group(0))).claims) if match else None
    except (json.JSONDecodeError, ValidationError):
        return None


def validate(claims: list[str] | None, sentence: str) -> list[str] | None:
    """Claims that are drawn from the sentence, de-duplicated; None when any one is not."""
    if not claims:
        return None
    kept: list[str] = []
    for claim in claims[:MAX_CLAIMS]:
        claim = " ".join(str(claim).split())
        if not content_words(claim) or overlap(claim, sentence) < MIN_DRAWN:
            return None  # one invented claim means the extraction cannot be trusted
        if claim not in kept:
            kept.append(claim)
    return kept


def attribute(claim: str, sentence: Sentence) -> list[int]:
    """Markers of the sentence segment the claim overlaps most; all markers when the sentence has one group."""
    cited = [(text, nums) for text, nums in sentence.segments if nums]
    if len(cited) <= 1:
        return list(sentence.citations)
    best = max(sentence.segments, key=lambda seg: overlap(claim, seg[0]))
    return best[1] or list(sentence.citations)


def claims_from_model(sentence: Sentence, claims: list[str] | None) -> list[Claim]:
    """Turn validated model output into claims, or fall back to the sentence itself."""
    valid = validate(claims, sentence.text)
    if valid is None:
        return [Claim(sentence.text, list(sentence.citations), sentence, "sentence")]
    return [Claim(text, attribute(text, sentence), sentence, "model") for text in valid]


def extract(llm: Any | None, sentence: Sentence) -> tuple[list[Claim], list[str] | None]:
    """Claims of one sentence and the model's raw list (for the cache); `llm=None` means sentence-as-claim."""
    raw = _ask(llm, sentence.text) if llm is not None else None
    return claims_from_model(sentence, raw), raw
