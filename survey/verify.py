"""Check a rendered survey from its Markdown alone: every `[n]` has a reference, and every reference is a
document that was actually retrieved. The graph runs this before it returns; the acceptance tests too."""
from __future__ import annotations

import re

from pydantic import BaseModel, Field

from survey.citations import expand_numbers
from survey.errors import SurveyError

_REF_LINE = re.compile(r"^\[(\d+)\]\s+(.+?)\s(?:arXiv:(\S+)|(\S+))\s*$")
_CITE = re.compile(r"\[(\d+(?:\s*[-\u2013,]\s*\d+)*)\]")


class SectionCitations(BaseModel):
    title: str
    numbers: list[int] = Field(default_factory=list)


class ParsedSurvey(BaseModel):
    """Sections with the citation numbers they use, and the references list (number -> document id)."""

    sections: list[SectionCitations]
    references: dict[int, str]

    def section_ids(self, title: str) -> set[str]:
        sec = next(s for s in self.sections if s.title == title)
        return {self.references[n] for n in sec.numbers if n in self.references}


def parse_survey(markdown: str) -> ParsedSurvey:
    """Split on `## ` headings; the `## References` section is read as `[n] ... arXiv:ID` lines."""
    sections: list[SectionCitations] = []
    references: dict[int, str] = {}
    current: SectionCitations | None = None
    in_refs = False
    for line in markdown.splitlines():
        if line.startswith("## "):
            in_refs = line[3:].strip().lower() == "references"
            current = None if in_refs else SectionCitations(title=line[3:].strip())
            if current:
                sections.append(current)
        elif in_refs and line.strip():
            m = _REF_LINE.match(line.strip())
            if not m:
                raise SurveyError(f"unreadable reference line: {line!r}")
            references[int(m.group(1))] = m.group(3) or m.group(4)
        elif current is not None:
            current.numbers += [n for g in _CITE.findall(line) for n in expand_numbers(g)]
    return ParsedSurvey(sections=sections, references=references)


def citation_problems(markdown: str, retrieved_ids: set[str]) -> list[str]:
    """Empty when every citation resolves to a reference and every reference was retrieved."""
    parsed = parse_survey(markdown)
    problems = []
    for sec in parsed.sections:
        for n in sec.numbers:
            if n not in parsed.references:
                problems.append(f"{sec.title}: [{n}] has no reference")
    for n, doc_id in parsed.references.items():
        if doc_id not in retrieved_ids:
            problems.append(f"reference [{n}] {doc_id} was not retrieved")
    return problems
