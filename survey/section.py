"""A written section as the graph stores it: plan, queries, sources, checked text and its bookkeeping."""
from __future__ import annotations

from pydantic import BaseModel, Field

from survey.sources import Source


class Usage(BaseModel):
    """Model calls and tokens spent on one part of the survey."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model_s: float = 0.0
    retries: int = 0
    errors: list[str] = Field(default_factory=list, description="backend failures that were retried")
    steps: list[dict] = Field(default_factory=list, description="engine telemetry per model call, in call order")

    def add(self, other: "Usage") -> "Usage":
        return Usage(calls=self.calls + other.calls, input_tokens=self.input_tokens + other.input_tokens,
                     output_tokens=self.output_tokens + other.output_tokens, model_s=self.model_s + other.model_s,
                     retries=self.retries + other.retries, errors=self.errors + other.errors,
                     steps=self.steps + other.steps)


class SectionResult(BaseModel):
    """One finished section (body, introduction or conclusion)."""

    index: int = Field(description="0-based position among body sections; -1 intro, -2 conclusion")
    title: str
    goal: str = ""
    queries: list[str] = Field(default_factory=list)
    retrieved_ids: list[str] = Field(default_factory=list, description="every document the queries returned")
    sources: list[Source] = Field(default_factory=list, description="the reranked sources shown to the model")
    text: str = Field("", description="checked prose, citations as [@doc_id]")
    cited_ids: list[str] = Field(default_factory=list)
    revisions: int = 0
    dropped_citations: list[str] = Field(default_factory=list)
    grounded: int = Field(0, description="sentences close to the abstract's wording, written only to reach the "
                                         "minimum of cited papers")
    written_by: dict[str, int] = Field(default_factory=dict,
                                       description="sentences by who wrote them: model (its rewrite passed the "
                                                   "checks), pipeline (built from the abstract), copied")
    seconds: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    run_id: str = Field("", description="the process run that wrote it (resume reuses earlier runs' sections)")
