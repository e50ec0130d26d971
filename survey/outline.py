"""The survey outline: sections with goals, parsed from a model's line-per-section answer.

A small model rarely produces valid JSON, so the plan is asked for as `Title: goal` lines and parsed
leniently; missing sections are filled from the titles of retrieved papers the outline does not cover yet,
so the survey always has the number of sections the user asked for, each anchored in the index.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, Field

from survey.errors import SurveyError
from survey.sources import Source
from survey.text import clean, content_words

_BULLET = re.compile(r"^\s*(?:#+\s*|[-*\u2022]\s*|\(?\d+[.)]\s*|section\s+\d+\s*[:.)-]\s*)", re.I)
_GENERIC = {"introduction", "conclusion", "conclusions", "references", "abstract", "summary", "outline"}
# Words that mark a line as chatter about the survey rather than a heading.
# Also the plan prompt's own words ("Papers found in the library"), which a small model echoes as a heading.
_CHATTER = re.compile(r"\b(survey|this|these|here|sure|following|section|sections|heading|headings|papers?|"
                      r"library|found|list|topic)\b", re.I)


class SectionPlan(BaseModel):
    """One body section of the survey: a short heading and the question it answers."""

    title: str = Field(description="short section heading, 2-8 words")
    goal: str = Field(description="one sentence: what this section covers")


class Outline(BaseModel):
    """The survey's title and its body sections, in reading order."""

    title: str
    sections: list[SectionPlan]
    repaired: int = Field(0, description="sections filled in from retrieved paper titles")


def _restates(title: str, topic: str) -> bool:
    """A heading whose words all come from the topic (two or more of them) is the topic again."""
    words = content_words(title)
    return len(words) >= 2 and words <= content_words(topic)


_DANGLING = {"a", "across", "an", "and", "as", "at", "beyond", "by", "for", "from", "in", "into", "of", "on", "or",
             "over", "the", "through", "to", "towards", "under", "using", "versus", "via", "vs", "with", "within",
             "without", "-", "–", "—"}


def _short(title: str, most: int = 8) -> str:
    """At most `most` words, cut where a heading can end: "Retrieval Augmented Generation Evaluation in the Era
    of Large Language Models" -> "Retrieval Augmented Generation Evaluation", not "... in the Era of"; short
    titles stay whole."""
    words = title.split()
    if len(words) <= most:
        return title
    words = words[:most + 1]  # the cut may fall right before the next word
    # before the first connecting word after the head (3+ words): the head phrase is what a heading needs
    cut = next((i for i in range(3, len(words)) if words[i].lower().strip(",;:") in _DANGLING), most)
    return " ".join(words[:cut]).rstrip(",;:")


def _parse_line(line: str, topic: str) -> SectionPlan | None:
    line = _BULLET.sub("", clean(line.replace("**", ""))).strip(" .:-\"'")
    if not line:
        return None
    title, colon, goal = line.partition(":")
    title, goal = title.strip(" .\"'"), goal.strip(" .\"'")
    words = title.split()
    if (not 1 <= len(words) <= (12 if colon else 7) or title.lower() in _GENERIC or title.endswith(",")
            or _CHATTER.search(title) or not content_words(title)
            or _restates(title, topic)):
        return None
    title = _short(title)
    return SectionPlan(title=title[:1].upper() + title[1:], goal=goal or title)


def _fill_title(source: Source) -> SectionPlan:
    # A retrieved paper's title; "Name: what it does" titles keep the part after a short name.
    before, _, after = source.title.partition(":")
    head = after.strip() if after.strip() and len(before.split()) <= 2 else before.strip()
    return SectionPlan(title=_short(head), goal=f"Work related to {source.title}")


def parse_outline(text: str, topic: str, n_sections: int, sources: list[Source]) -> Outline:
    """Parse `Title: goal` lines, drop duplicates and generic headings, fill up to `n_sections`."""
    if n_sections < 1:
        raise SurveyError(f"--sections must be at least 1 (got {n_sections})")
    plans: list[SectionPlan] = []
    seen: set[frozenset[str]] = set()
    for line in (text or "").splitlines():
        plan = _parse_line(line, topic)
        key = frozenset(content_words(plan.title)) if plan else None
        # Near-duplicates: one heading's words contained in another's ("Quantization" / "Weight Quantization").
        if plan and not any(key <= old or old <= key for old in seen):
            seen.add(key)
            plans.append(plan)
        if len(plans) == n_sections:
            break
    repaired = 0
    for src in sources:
        if len(plans) >= n_sections:
            break
        plan = _fill_title(src)
        key = frozenset(content_words(plan.title))
        if key and not any(key <= old or old <= key for old in seen):
            seen.add(key)
            plans.append(plan)
            repaired += 1
    if len(plans) < n_sections:
        raise SurveyError(f"could only plan {len(plans)} of {n_sections} sections for {topic!r}: the index has "
                          "too few matching documents; use a broader topic, a bigger index or fewer --sections")
    return Outline(title=clean(topic)[:1].upper() + clean(topic)[1:], sections=plans, repaired=repaired)
