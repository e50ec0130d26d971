"""Export of citation groups and ranges (`[6, 7]`, `[2-4]`) and of accented author names in BibTeX keys.

The "index" is a dict of real retrieval Documents behind `find`, the one method export uses.
"""
from __future__ import annotations

import re

import bibtexparser
import pytest

from retrieval.types import Document
from survey.errors import SurveyError
from survey.export import export_survey
from survey.render import reference_line
from survey.sources import source_from_hit

DOCS = [Document(id=f"2503.0000{i}", title=title, authors=authors, year=2025)
        for i, (title, authors) in enumerate([
            ("SemEval task on multilingual claims", "Raúl Vázquez, Ana Pérez"),
            ("Speculative decoding with trees", "Jürgen Müller"),
            ("Sparse attention for long context", "Łukasz Kaiser"),
            ("KV cache quantization", "Søren Ødegaard"),
            ("Retrieval for surveys", "Zoë Brontë"),
        ], start=1)]


class DictIndex:
    def __init__(self, docs):
        self.docs = {d.id: d for d in docs}

    def find(self, doc_id):
        return self.docs.get(doc_id)


def survey(body: str, refs=DOCS) -> str:
    lines = [reference_line(n, source_from_hit(d)) for n, d in enumerate(refs, start=1)]
    return "\n".join(["# A survey", "", "## Methods", "", body, "", "## References", "", *lines]) + "\n"


def test_export_tex_groups_and_ranges_become_one_cite():
    md = survey("Trees help [1, 2]. Long context [3-5]. Mixed [1; 4]. Both [2 and 3]. Single [5].")
    tex = export_survey(md, DictIndex(DOCS), "tex")
    bib = bibtexparser.parse_string(export_survey(md, DictIndex(DOCS), "bib"))
    keys = [e.key for e in bib.entries]
    assert keys[0] == "vazquez2025semeval" and keys[1] == "muller2025speculative"
    assert keys[2] == "kaiser2025sparse" and keys[3] == "odegaard2025cache" and keys[4] == "bronte2025retrieval"
    cites = re.findall(r"\\cite\{([^}]+)\}", tex)
    assert cites == [f"{keys[0]},{keys[1]}", ",".join(keys[2:5]), f"{keys[0]},{keys[3]}",
                     f"{keys[1]},{keys[2]}", keys[4]]
    assert "[" not in tex.split("\\begin{document}")[1]  # no literal citation text left


def test_export_refuses_unresolved_member_of_group_and_range():
    md = survey("Trees help [1, 7]. Long context [4-6].")
    with pytest.raises(SurveyError) as err:
        export_survey(md, DictIndex(DOCS), "tex")
    assert "[7] in 'Methods' has no References entry" in str(err.value)
    assert "[6] in 'Methods' has no References entry" in str(err.value)
    missing_doc = survey("Trees help [1, 2].", refs=DOCS[:1] + [Document(id="9912.99999", title="Gone")])
    with pytest.raises(SurveyError, match=r"\[2\] 9912.99999 is not in the index"):
        export_survey(missing_doc, DictIndex(DOCS), "tex")


def test_export_force_marks_only_the_unresolved_members():
    md = survey("Trees help [1, 7]. Long context [4-6]. Gone [8].")
    tex = export_survey(md, DictIndex(DOCS), "tex", force=True)
    assert "\\cite{vazquez2025semeval}~\\textbf{[?7]}" in tex
    assert "\\cite{odegaard2025cache,bronte2025retrieval}~\\textbf{[?6]}" in tex and "\\textbf{[?8]}" in tex
    marked = export_survey(md, DictIndex(DOCS), "md", force=True)
    assert "[1, 7, not in index: 7]" in marked and "[4-6, not in index: 6]" in marked
    assert "[8, not in index]" in marked
