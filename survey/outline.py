"""The survey outline: one body section per group of retrieved papers, named by topic (survey.topics).

A heading is the model's name for the group when `check_heading` accepts it, else the group's keyphrases;
never a paper's title. Each section carries its papers' ids, so the section writer starts from the group
rather than from a fresh search.
"""
from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, Field

from survey.sources import Source
from survey.text import clean
from survey.topics import check_heading, keyphrase_heading, title_case


class SectionPlan(BaseModel):
    """One body section of the survey: a topic heading, its keyphrases and the papers of its group."""

    title: str = Field(description="short topic heading, 2-6 words, never a paper title")
    goal: str = Field(description="one line: what the section covers (from its keyphrases)")
    source_ids: list[str] = Field(default_factory=list, description="the group's papers, closest to its centre first")
    keyphrases: list[str] = Field(default_factory=list)
    named_by: Literal["model", "keyphrases"] = "keyphrases"
    rejected_name: str = Field("", description="the model's name when it was not used, with the reason")


class Outline(BaseModel):
    """The survey's title and its body sections, in reading order."""

    title: str
    sections: list[SectionPlan]


class HeadingAnswer(BaseModel):
    """A section heading: 2 to 5 words naming what the papers have in common (not a paper's title)."""

    heading: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*(-[A-Za-z0-9]+)?( [A-Za-z0-9]+(-[A-Za-z0-9]+)?){1,4}$")


def heading_schema() -> dict:
    """The `response_format` that constrains the naming call to `HeadingAnswer` (grammar-decoded on the engine)."""
    return {"type": "json_schema", "json_schema": {"name": "HeadingAnswer", "schema": HeadingAnswer.model_json_schema(),
                                                   "strict": True}}


def parse_heading(text: str) -> str:
    """The heading from the model's JSON answer; a bare line is accepted too (a backend without grammars)."""
    try:
        value = json.loads(text).get("heading", "")
    except (json.JSONDecodeError, AttributeError):
        match = re.search(r'"heading"\s*:\s*"([^"]*)"', text or "")
        value = match.group(1) if match else (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return clean(str(value)).strip(" .:\"'*#")


def name_section(model_text: str, phrases: list[str], group: list[Source], topic: str, taken: list[str],
                 titles: list[str]) -> tuple[str, str, str]:
    """(heading, named_by, rejected): the model's name if it passes `check_heading`, else the keyphrases'."""
    name = parse_heading(model_text)
    if name:
        name = title_case(name.lower(), " ".join(f"{s.title} {s.text}" for s in group))
        problem = check_heading(name, phrases, group, topic, taken, titles)
        if problem is None:
            return name, "model", ""
        rejected = f"{name!r}: {problem}"
    else:
        rejected = "no name given"
    return keyphrase_heading(phrases, group, taken), "keyphrases", rejected


def section_goal(phrases: list[str]) -> str:
    return "Work on " + ", ".join(phrases[:3]) if phrases else "Related work"


def outline_title(topic: str) -> str:
    topic = clean(topic)
    return topic[:1].upper() + topic[1:]
