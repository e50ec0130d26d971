"""The JSON trace of a survey run: outline, queries, retrieved ids per section, timings and token counts.

Per-call engine telemetry (`Usage.steps`) is listed once, in `trace_steps` order, by the caller (the agents
layer sums it); the usage blocks here leave it out.
"""
from __future__ import annotations

from typing import Any

from survey.outline import Outline
from survey.section import SectionResult, Usage


def build_trace(topic: str, thread_id: str, outline: Outline, parts: list[SectionResult],
                plan_usage: Usage, plan_ids: list[str], stage_s: float) -> dict[str, Any]:
    total = plan_usage
    for part in parts:
        total = total.add(part.usage)
    return {
        "topic": topic,
        "thread_id": thread_id,
        "outline": outline.model_dump(),
        "plan": {"retrieved_ids": plan_ids, "usage": plan_usage.model_dump(exclude={"steps"})},
        "sections": [
            {"index": p.index, "title": p.title, "goal": p.goal, "queries": p.queries,
             "retrieved_ids": p.retrieved_ids, "source_ids": [s.id for s in p.sources], "cited_ids": p.cited_ids,
             "revisions": p.revisions, "dropped_citations": p.dropped_citations, "grounded_sentences": p.grounded,
             "written_by": p.written_by,
             "seconds": round(p.seconds, 3), "usage": p.usage.model_dump(exclude={"steps"}), "run_id": p.run_id}
            for p in parts
        ],
        "totals": {**total.model_dump(exclude={"steps"}), "stage_s": round(stage_s, 3),
                   "decode_tok_s": round(total.output_tokens / total.model_s, 2) if total.model_s else None},
    }


def trace_steps(plan_usage: Usage, parts: list[SectionResult]) -> list[dict]:
    """Every model call's telemetry: planning first, then the parts in reading order."""
    return [*plan_usage.steps, *(step for p in parts for step in p.usage.steps)]
