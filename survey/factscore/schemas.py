"""Structured outputs asked of the chat model (pydantic: their docstrings are the descriptions)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"


class AtomicClaims(BaseModel):
    """The atomic claims of one sentence: short, self-contained statements, each checkable on its own."""

    claims: list[str] = Field(description="one independent fact per item, in the sentence's own words",
                              min_length=1, max_length=12)  # an empty list says nothing: never allowed


class Verdict(BaseModel):
    """Whether the evidence passages support the claim, and which passages do."""

    verdict: Literal["supported", "not supported"] = Field(
        description="'supported' only when the passages state the claim; otherwise 'not supported'")
    evidence_ids: list[str] = Field(default_factory=list,
                                    description="ids of the passages that support the claim")
