"""Knobs of a survey run, read by each node from the run's `configurable` dict."""
from __future__ import annotations

from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, Field, model_validator

from survey.errors import SurveyError


class Configuration(BaseModel):
    """Sizes and bounds of one survey. Stored in the graph state at start so that a resume reuses them."""

    sections: int = Field(5, description="body sections (introduction and conclusion come on top)")
    words_per_section: int = Field(120, description="target length of each body section")
    write_mode: Literal["per_source", "section"] = Field(
        "per_source", description="per_source: one grounded sentence per source, built from its abstract and "
        "cited by construction (suits small models); section: the model writes the whole section with [n] "
        "citations, checked and revised")
    rewrite: bool = Field(True, description="per_source: the model offers a rewrite of each paper's key "
                          "sentences (JSON-schema constrained), used when it passes the grounding checks")
    sources_per_section: int = Field(4, description="reranked documents shown to the writer per section")
    queries_per_section: int = Field(2, description="search queries the model adds to the section title")
    hits_per_query: int = Field(8, description="documents retrieved per query before dedupe and rerank")
    plan_hits: int = Field(16, description="documents retrieved for the topic to plan the outline")
    min_citations: int = Field(3, description="distinct retrieved papers each body section must cite")
    max_revisions: int = Field(1, description="rewrites of a section whose citation check failed")
    # The engine's scheduler batches concurrent sections (6 sections: 1.62x faster wall, same text, 2-core CPU)
    max_parallel: int = Field(4, description="sections written at once (the engine and batching servers serve "
                                             "them together)")
    retries: int = Field(2, description="retries of a failed backend call before the run stops")
    backoff_s: float = Field(0.5, description="pause before a retry, times the attempt number")

    @model_validator(mode="after")
    def _check(self) -> "Configuration":
        for name in ("sections", "words_per_section", "sources_per_section", "hits_per_query", "plan_hits",
                     "max_parallel"):
            if getattr(self, name) < 1:
                raise SurveyError(f"{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.min_citations > self.sources_per_section:
            raise SurveyError(f"min-citations ({self.min_citations}) cannot exceed sources-per-section "
                              f"({self.sources_per_section})")
        return self

    @property
    def prose_tokens(self) -> int:
        """Token budget of one prose call: ~1.3 tokens a word plus citations, and room to end the sentence."""
        return int(self.words_per_section * 1.6) + 24

    @classmethod
    def from_runnable_config(cls, config: RunnableConfig | None = None) -> "Configuration":
        configurable: dict[str, Any] = (config or {}).get("configurable", {}) or {}
        return cls(**{k: configurable[k] for k in cls.model_fields if k in configurable})
