"""Graph state: plain JSON-able dicts (pydantic dumps), so the SQLite checkpointer stores them as they are."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, TypedDict


def merge_sections(old: dict[str, dict] | None, new: dict[str, dict] | None) -> dict[str, dict]:
    """Sections written in parallel each add their own key."""
    return {**(old or {}), **(new or {})}


class SurveyState(TypedDict, total=False):
    topic: str
    thread_id: str
    settings: dict[str, Any]  # Configuration dump, kept so a resume runs with the same sizes
    outline: dict  # survey.outline.Outline
    plan_sources: list[dict]  # survey.sources.Source, the topic's first retrieval
    plan_usage: dict  # survey.section.Usage
    plan_s: float
    sections: Annotated[dict[str, dict], merge_sections]  # str(index) -> survey.section.SectionResult
    intro: dict
    conclusion: dict
    markdown: str
    bibtex: str
    trace: dict


class SectionTask(TypedDict):
    """What `dispatch` sends to one `section` task."""

    index: int
    topic: str
    plan: dict  # survey.outline.SectionPlan
    group: list[dict]  # survey.sources.Source of the section's group, abstracts included
    avoid: list[str]  # documents other groups hold or other sections already cite


@dataclass
class SurveyContext:
    """Run-time objects the nodes use; not checkpointed (a resume passes fresh ones)."""

    model: Any  # langchain_core BaseChatModel
    retriever: Any  # search(query, k) -> list[Hit]
    run_id: str = ""
    embed: Callable[[list[str]], Any] | None = None  # texts -> unit vectors [n, dim]; None: TF-IDF vectors
