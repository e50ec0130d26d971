"""Parse a survey in Markdown: `## ` sections, `[n]` citations and the references list.

Works on any Markdown (not only ours): text before the first `## ` heading is a section of its own, `### `
and deeper headings stay inside their `## ` section, and a references list is any `## References` /
`## Bibliography` section whose entries start with `[n]` or `n.`. Problems (no references list, duplicate
numbers) are recorded in `ParsedSurvey.problems` rather than raised, so the report can show them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from survey.citations import expand_numbers as parse_citation_numbers  # the survey writer's `[1, 3-5]` reader

REFERENCE_HEADINGS = ("references", "bibliography", "works cited", "citations")
# `[3]`, `[1, 2]`, `[1-3]`, `[1–3]`; not Markdown links (those are `[text](url)` and never all digits).
CITATION_RE = re.compile(r"\[(\d+(?:\s*[,;\-–]\s*\d+)*)\](?!\()")
ARXIV_RE = re.compile(r"(?:arxiv[:\s/]*|abs/)(\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?", re.I)
_ENTRY_RE = re.compile(r"^\s*(?:[-*]\s*)?(?:\[(\d+)\]|(\d+)\.)\s+(.*)$")


@dataclass
class Reference:
    """One entry of the references list: its number, raw text, and what we can read from it."""

    number: int
    raw: str
    title: str
    arxiv_id: str | None


@dataclass
class Section:
    """A `## ` section: its heading and body text (headings of subsections included as plain lines)."""

    title: str
    body: str


@dataclass
class ParsedSurvey:
    title: str
    sections: list[Section]
    references: dict[int, Reference]
    problems: list[str] = field(default_factory=list)


def _strip_markup(line: str) -> str:
    """Markdown emphasis, inline code and links reduced to their text; citation markers are kept."""
    line = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", line)           # images carry no claims
    line = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", line)       # [text](url) -> text
    line = re.sub(r"(?<!\w)(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1(?!\w)", r"\2", line)  # not snake_case
    return re.sub(r"^\s*(?:[-*+]|\d+\.)\s+", "", line)         # list bullets


def _body_lines(lines: list[str]) -> list[str]:
    """Prose lines of a section: no code blocks, tables, HTML or rules; subheadings become sentences."""
    out, in_code = [], False
    for line in lines:
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
            continue
        stripped = line.strip()
        if in_code or stripped.startswith(("|", "<", "---", "***")):
            out.append("")
            continue
        if stripped.startswith("#"):
            out.append("")  # a subheading is a title, not a claim
            continue
        out.append(_strip_markup(line))
    return out


def parse_reference_entry(number: int, text: str) -> Reference:
    """Read `Title. Authors, year. arXiv:ID` (our renderer) or any entry that holds a title and/or an id."""
    text = text.strip()
    match = ARXIV_RE.search(text)
    arxiv_id = match.group(1) if match else None
    quoted = re.search(r"[\"“](.+?)[\"”]", text)
    if quoted:  # `Authors. "Title." Venue` style
        title = quoted.group(1)
    else:
        title = re.split(r"(?<=[^A-Z\s])\.\s", text, maxsplit=1)[0]
    title = re.sub(r"\*|_", "", title).strip().rstrip(".")
    if ARXIV_RE.fullmatch(title.strip()) or title.lower().startswith(("arxiv", "http")):
        title = ""
    return Reference(number=number, raw=text, title=title, arxiv_id=arxiv_id)


def _parse_references(lines: list[str], problems: list[str]) -> dict[int, Reference]:
    refs: dict[int, Reference] = {}
    current: tuple[int, list[str]] | None = None

    def close() -> None:
        if current is None:
            return
        number, parts = current
        if number in refs:
            problems.append(f"reference [{number}] is listed twice; the first entry is used")
        else:
            refs[number] = parse_reference_entry(number, " ".join(parts))

    for line in lines:
        match = _ENTRY_RE.match(line)
        if match:
            close()
            current = (int(match.group(1) or match.group(2)), [match.group(3)])
        elif line.strip() and current is not None:
            current[1].append(line.strip())  # wrapped entry
    close()
    return refs


def parse_survey(markdown: str) -> ParsedSurvey:
    """Split Markdown into the title, `## ` sections and the numbered references list."""
    title, sections, problems = "", [], []
    references: dict[int, Reference] | None = None
    heading, buffer = "", []

    def flush() -> None:
        nonlocal references
        if heading.strip().lower().rstrip(":") in REFERENCE_HEADINGS:
            found = _parse_references(buffer, problems)
            references = {**(references or {}), **found}
        else:
            body = "\n".join(_body_lines(buffer)).strip()
            if body:
                sections.append(Section(title=heading or title or "(untitled)", body=body))

    for line in markdown.splitlines():
        if line.startswith("# ") and not title:
            title = line[2:].strip()
            continue
        if re.match(r"^##\s+\S", line):
            flush()
            heading, buffer = line.lstrip("#").strip(), []
            continue
        buffer.append(line)
    flush()
    if references is None:
        problems.append("no references list (a `## References` section with `[n]` entries): "
                        "citations cannot be resolved, so citation precision is 0 for cited claims")
        references = {}
    elif not references:
        problems.append("the references section has no `[n] ...` entries")
    return ParsedSurvey(title=title, sections=sections, references=references, problems=problems)
