"""`cpm survey export`: a survey whose citations all resolve exports to Markdown, LaTeX and BibTeX with matching
keys; one citation edited to point outside the index is refused (exit 2, the citation named) unless --force.

The survey is rendered by survey.render from real documents of the real test index (no model needed).
"""
from __future__ import annotations

import re

import bibtexparser
import pytest

from survey.render import render_markdown
from survey.section import SectionResult
from survey.sources import source_from_hit
from tui.cli import main


@pytest.fixture(scope="module")
def index(survey_index):
    from retrieval import Index

    return Index.open(survey_index)


@pytest.fixture(scope="module")
def survey_md(index) -> str:
    """Two sections citing four real documents of the index, one of them twice, with LaTeX-special characters."""
    docs = [source_from_hit(index.get(h.id)) for h in index.search("speculative decoding quantization", k=8)]
    docs = list({d.id: d for d in docs}.values())[:4]
    assert len(docs) == 4
    a, b, c, d = (f"[@{s.id}]" for s in docs)
    parts = [SectionResult(index=0, title="Speculative decoding & drafts", sources=docs[:2],
                           text=f"Drafting saves 50% of steps {a}. Trees of drafts help {b}."),
             SectionResult(index=1, title="Quantization_methods", sources=docs,
                           text=f"Low-bit weights {c} and {d}; see also {a}.")]
    return render_markdown("Efficient inference: a survey", parts)


def _write(tmp_path, text: str):
    path = tmp_path / "survey.md"
    path.write_text(text)
    return path


def test_survey_export_clean_latex_cites_only_bibtex_keys(tmp_path, index, survey_md, survey_index):
    md = _write(tmp_path, survey_md)
    tex, bib = tmp_path / "survey.tex", tmp_path / "survey.bib"
    assert main(["survey", "export", str(md), "--index", str(survey_index), "--format", "tex", "--out", str(tex)]) == 0
    assert main(["survey", "export", str(md), "--index", str(survey_index), "--format", "bib", "--out", str(bib)]) == 0
    latex = tex.read_text()
    cites = re.findall(r"\\cite\{([^}]+)\}", latex)
    entries = bibtexparser.parse_string(bib.read_text()).entries
    keys = {e.key for e in entries}
    assert len(cites) == 5 and len(keys) == 4
    assert set(cites) == keys
    assert "\\bibliography{survey}" in latex and "\\section{Speculative decoding \\& drafts}" in latex
    assert "50\\%" in latex and "Quantization\\_methods" in latex and "[?" not in latex
    # Each key's entry is the document the Markdown's reference pointed at.
    ids = re.findall(r"^\[\d+\] .* arXiv:(\S+)$", survey_md, re.M)
    assert [e.fields_dict["eprint"].value for e in entries] == ids


def test_survey_export_refuses_citation_outside_index(tmp_path, capsys, survey_md, survey_index):
    second = re.findall(r"^\[2\] .* arXiv:(\S+)$", survey_md, re.M)[0]
    edited = survey_md.replace(f"arXiv:{second}\n", "arXiv:9912.99999\n")
    md = _write(tmp_path, edited)
    out = tmp_path / "survey.tex"
    assert main(["survey", "export", str(md), "--index", str(survey_index), "--format", "tex", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[2] 9912.99999 is not in the index" in err[0] and "--force" in err[0]
    assert not out.exists()

    assert main(["survey", "export", str(md), "--index", str(survey_index), "--format", "tex", "--out", str(out),
                 "--force"]) == 0
    latex = out.read_text()
    assert latex.count("\\textbf{[?2]}") == 1 and len(re.findall(r"\\cite\{", latex)) == 4
    assert main(["survey", "export", str(md), "--index", str(survey_index), "--format", "md", "--force"]) == 0
    marked = capsys.readouterr().out
    assert "[2, not in index]" in marked and "9912.99999" not in marked


def test_survey_export_markdown_references_come_from_the_index(capsys, tmp_path, survey_md, survey_index):
    md = _write(tmp_path, survey_md.replace("## References", "## References\n").replace("Drafting", "Drafting"))
    assert main(["survey", "export", str(md), "--index", str(survey_index)]) == 0
    assert capsys.readouterr().out == survey_md


def test_survey_export_cited_number_without_reference(tmp_path, capsys, survey_md, survey_index):
    md = _write(tmp_path, survey_md.replace("Trees of drafts help [2].", "Trees of drafts help [9]."))
    assert main(["survey", "export", str(md), "--index", str(survey_index), "--format", "bib"]) == 2
    assert "[9] in 'Speculative decoding & drafts' has no References entry" in capsys.readouterr().err


def test_survey_export_needs_a_file(tmp_path, capsys, survey_index):
    assert main(["survey", "export", "--index", str(survey_index)]) == 2
    assert "give the survey to export" in capsys.readouterr().err
    assert main(["survey", "export", str(tmp_path / "none.md"), "--index", str(survey_index)]) == 2
    assert "no survey file" in capsys.readouterr().err
