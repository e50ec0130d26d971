"""Guarded export of a written survey (its Markdown) to Markdown, LaTeX or BibTeX.

Every citation must resolve, through its References line, to a document in the index: the export refuses,
naming each offending citation, unless forced, in which case those citations are marked in the text
(`[n, not in index]` in Markdown, a bold `[?n]` in LaTeX) and left out of the BibTeX. The references are
rebuilt from the index's records, so the export shows what the index holds, not what the file claims. LaTeX
cites with `\\cite{key}`, the keys of the BibTeX export of the same survey; a group or range (`[6, 7]`,
`[2-4]`) becomes one `\\cite{a,b,c}` and each of its members must resolve like a single citation.

The index is anything with `find(arxiv_id_or_id) -> record | None` (retrieval.Index is one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from survey.bibtex import bibtex_keys, render_bibtex
from survey.citations import expand_numbers
from survey.errors import SurveyError
from survey.render import reference_line
from survey.sources import Source, source_from_hit
from survey.verify import parse_survey

FORMATS = ("md", "tex", "bib")
# A citation group as the writer emits and survey.citations reads it: [3], [6, 7], [2-4], [1; 5], [1 and 2].
_CITE = re.compile(r"\[\s*(\d+(?:\s*(?:[-\u2013,;]|and)\s*\d+)*)\s*\]")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


@dataclass
class CheckedSurvey:
    """A survey's Markdown with each citation number resolved against the index (or reported)."""

    markdown: str
    title: str
    sections: list[tuple[str, str]]  # (heading, body Markdown), References excluded
    resolved: dict[int, Source]  # citation number -> the index's document, in References order
    problems: list[str]  # one line per offending citation

    @property
    def unresolved(self) -> set[int]:
        return {n for n in _numbers(self) if n not in self.resolved}


def check_survey(markdown: str, index: Any) -> CheckedSurvey:
    """Resolve every citation of `markdown` against `index`; SurveyError for a file that is not a survey."""
    parsed = parse_survey(markdown)
    if not parsed.sections:
        raise SurveyError("no `## ` sections found: export takes the Markdown that `cpm survey` wrote")
    resolved: dict[int, Source] = {}
    problems: list[str] = []
    for n, doc_id in sorted(parsed.references.items()):
        record = index.find(doc_id)
        if record is None:
            problems.append(f"[{n}] {doc_id} is not in the index")
        else:
            resolved[n] = source_from_hit(record)
    sections = _sections(markdown)
    for heading, body in sections:
        for n in dict.fromkeys(_members(body)):  # every member of a group or range, not just single [n]
            if n not in parsed.references:
                problems.append(f"[{n}] in {heading!r} has no References entry")
    title = next((ln[2:].strip() for ln in markdown.splitlines() if ln.startswith("# ")), "Survey")
    return CheckedSurvey(markdown, title, sections, resolved, problems)


def export_survey(markdown: str, index: Any, fmt: str, *, force: bool = False, bib_name: str = "references",
                  where: str = "the survey") -> str:
    """The survey in `fmt` ("md", "tex" or "bib"); SurveyError naming the offending citations unless `force`.

    `bib_name` is the BibTeX file the LaTeX points at (`\\bibliography{bib_name}`).
    """
    if fmt not in FORMATS:
        raise SurveyError(f"unknown export format {fmt!r}: use {', '.join(FORMATS)}")
    checked = check_survey(markdown, index)
    if checked.problems and not force:
        raise SurveyError(f"{where}: {len(checked.problems)} citation(s) do not resolve to a document in the "
                          f"index: {'; '.join(checked.problems)}. Fix the References or export with --force "
                          "(which marks them)")
    if fmt == "bib":
        return render_bibtex(list(checked.resolved.values())) if checked.resolved else ""
    if fmt == "tex":
        return to_latex(checked, bib_name)
    return to_markdown(checked)


def to_markdown(checked: CheckedSurvey) -> str:
    """The survey with References rebuilt from the index; unresolved citations marked in the text."""
    bad = checked.unresolved

    def mark(m: re.Match) -> str:
        missing = [n for n in expand_numbers(m.group(1)) if n in bad]
        if not missing:
            return m.group(0)
        if len(missing) == len(expand_numbers(m.group(1))):
            return f"[{m.group(1)}, not in index]"
        return f"[{m.group(1)}, not in index: {', '.join(map(str, missing))}]"

    out = [f"# {checked.title}", ""]
    for heading, body in checked.sections:
        body = _CITE.sub(mark, body)
        out += [f"## {heading}", "", body.strip(), ""]
    out += ["## References", ""]
    out += [reference_line(n, src) for n, src in checked.resolved.items()]
    return "\n".join(out).rstrip() + "\n"


def to_latex(checked: CheckedSurvey, bib_name: str) -> str:
    """A standalone article: one `\\section` per survey section, `[n]` as `\\cite{key}`, BibTeX bibliography."""
    keys = dict(zip(checked.resolved, bibtex_keys(list(checked.resolved.values()))))

    def cite(m: re.Match) -> str:
        numbers = list(dict.fromkeys(expand_numbers(m.group(1))))
        if not numbers:  # a "range" too wide to be one (1-999): not a citation, keep the text
            return latex_escape(m.group(0))
        found = [keys[n] for n in numbers if n in keys]
        parts = [f"\\cite{{{','.join(found)}}}"] if found else []
        parts += [f"\\textbf{{[?{n}]}}" for n in numbers if n not in keys]
        return "~".join(parts)

    out = [r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage[utf8]{inputenc}",
           r"\usepackage{url}", "", f"\\title{{{latex_escape(checked.title)}}}", r"\date{}", "",
           r"\begin{document}", r"\maketitle", ""]
    for heading, body in checked.sections:
        # Escape the prose piece by piece so the \cite commands themselves are not escaped.
        pieces, last = [], 0
        for m in _CITE.finditer(body):
            pieces += [latex_escape(body[last:m.start()]), cite(m)]
            last = m.end()
        pieces.append(latex_escape(body[last:]))
        out += [f"\\section{{{latex_escape(heading)}}}", "".join(pieces).strip(), ""]
    out += [r"\bibliographystyle{plain}", f"\\bibliography{{{bib_name}}}", "", r"\end{document}"]
    return "\n".join(out) + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _sections(markdown: str) -> list[tuple[str, str]]:
    out: list[tuple[str, list[str]]] = []
    for line in markdown.splitlines():
        if line.startswith("## "):
            out.append((line[3:].strip(), []))
        elif out:
            out[-1][1].append(line)
    return [(h, "\n".join(body).strip()) for h, body in out if h.lower() != "references"]


def _members(body: str) -> list[int]:
    return [n for group in _CITE.findall(body) for n in expand_numbers(group)]


def _numbers(checked: CheckedSurvey) -> list[int]:
    return [n for _, body in checked.sections for n in _members(body)]
