"""Markdown rendering: one `## ` heading per section, `[@doc_id]` markers numbered by first use, and a final
`## References` list with one `[n] Title. Authors, year. arXiv:ID` line per cited paper."""
from __future__ import annotations

import re

from survey.citations import cited_ids
from survey.section import SectionResult
from survey.sources import Source

_MARKER = re.compile(r"\[@([^\]\s]+)\]")


def numbering(parts: list[SectionResult]) -> dict[str, int]:
    """Global citation numbers in reading order."""
    order: dict[str, int] = {}
    for part in parts:
        for doc_id in cited_ids(part.text):
            order.setdefault(doc_id, len(order) + 1)
    return order


def all_sources(parts: list[SectionResult]) -> dict[str, Source]:
    out: dict[str, Source] = {}
    for part in parts:
        for src in part.sources:
            out.setdefault(src.id, src)
    return out


def reference_line(n: int, src: Source) -> str:
    authors = src.authors or "Unknown authors"
    year = f", {src.year}" if src.year else ""
    where = f"arXiv:{src.arxiv_id}" if src.arxiv_id else (src.url or src.id)
    return f"[{n}] {src.title.rstrip('.')}. {authors}{year}. {where}"


def render_markdown(title: str, parts: list[SectionResult]) -> str:
    """`parts` in reading order (introduction, body sections, conclusion)."""
    numbers = numbering(parts)
    sources = all_sources(parts)
    missing = [d for d in numbers if d not in sources]
    if missing:  # cannot happen through check_citations; a guard for hand-built parts
        raise ValueError(f"cited documents without a retrieved source: {missing}")
    out = [f"# {title}", ""]
    for part in parts:
        body = _MARKER.sub(lambda m: f"[{numbers[m.group(1)]}]", part.text)
        out += [f"## {part.title}", "", body, ""]
    out += ["## References", ""]
    for doc_id, n in numbers.items():
        out.append(reference_line(n, sources[doc_id]))
    return "\n".join(out).rstrip() + "\n"
