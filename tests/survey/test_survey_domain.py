"""Unit tests of the survey domain (no model): outline parsing, citation checking, rendering, BibTeX."""
from __future__ import annotations

import bibtexparser
from survey.bibtex import render_bibtex
from survey.citations import check_citations, expand_numbers, parse_numbers
from survey.render import render_markdown
from survey.section import SectionResult
from survey.sources import Source, rerank, year_of
from survey.verify import citation_problems, parse_survey

SOURCES = [
    Source(id="2503.00001", title="Speculative Decoding with Draft Heads", authors="Ada Lovelace, Alan Turing",
           text="Speculative decoding uses a small draft model to propose tokens that the target model verifies."),
    Source(id="2503.00002", title="QLite: 4-bit Quantization for Phones", authors="Grace Hopper",
           text="We quantize weights to 4 bits so that language models run on mobile phones with little memory."),
    Source(id="2503.00003", title="Sparse Attention for Long Context", authors="Edsger Dijkstra",
           text="Sparse attention selects a few key blocks so long context inference costs less memory and time."),
    Source(id="2503.00004", title="KV Cache Compression {via} $\\ell_1$ Pruning", authors="Barbara Liskov",
           text="Compressing the key value cache reduces memory traffic during decoding."),
]


def test_survey_expand_numbers_groups_and_ranges():
    assert expand_numbers("1, 3-5") == [1, 3, 4, 5]
    assert parse_numbers("as shown [2][4] and [1, 3] or [1-999]") == [2, 4, 1, 3]


def test_survey_check_keeps_relevant_drops_missing_and_moves_mismatched():
    draft = ("## Methods\nSpeculative decoding lets a draft model propose tokens for verification [1]. "
             "Weights quantized to 4 bits run on mobile phones [1]. "
             "Sparse attention reduces long context cost [9].\nReferences:\n[1] Foo")
    rep = check_citations(draft, SOURCES)
    assert "##" not in rep.text and "References" not in rep.text
    assert rep.cited_ids == ["2503.00001", "2503.00002", "2503.00003"]
    assert rep.moved == 1
    assert any("[9] names no source" in d for d in rep.dropped)
    assert "[@2503.00003]." in rep.text  # added on the uncited-now sentence by content match


def test_survey_check_drops_unsupported_and_dedupes_loops():
    draft = "The weather is nice today [2]. The weather is nice today [2]. The weather is nice."
    rep = check_citations(draft, SOURCES)
    assert rep.cited_ids == [] and rep.text.count("weather") == 1
    assert "cite at least 3" in rep.problems(3)[-1]


def test_survey_rerank_dedupes_and_prefers_goal():
    cands = [s.model_copy(update={"score": 0.5}) for s in SOURCES] + [SOURCES[0].model_copy(update={"score": 0.9})]
    ranked = rerank("quantize weights to 4 bits for phones", cands, keep=3)
    assert ranked[0].id == "2503.00002" and len({s.id for s in ranked}) == 3


def test_survey_year_from_arxiv_id():
    assert year_of("2503.14620", None) == 2025 and year_of("hep-th/9901001", None) == 1999
    assert year_of("doc-7", None) is None and year_of("2503.14620", 2024) == 2024


def _parts():
    a = check_citations("Speculative decoding drafts tokens [1]. Quantized weights in 4 bits run on phones [2].",
                        SOURCES)
    b = check_citations("Key value cache compression reduces memory [4]. Drafting tokens speeds decoding [1].",
                        SOURCES)
    return [SectionResult(index=0, title="Decoding", sources=SOURCES, text=a.text, cited_ids=a.cited_ids),
            SectionResult(index=1, title="Memory", sources=SOURCES, text=b.text, cited_ids=b.cited_ids)]


def test_survey_render_numbers_globally_and_lists_references():
    md = render_markdown("Efficient inference", _parts())
    assert "## Decoding" in md and "## Memory" in md and md.rstrip().splitlines()[-1].startswith("[3] KV Cache")
    assert "[1] Speculative Decoding with Draft Heads. Ada Lovelace, Alan Turing, 2025. arXiv:2503.00001" in md
    assert "memory [3]." in md and "decoding [1]." in md
    parsed = parse_survey(md)
    assert parsed.section_ids("Memory") == {"2503.00004", "2503.00001"}
    assert citation_problems(md, {s.id for s in SOURCES}) == []
    assert citation_problems(md, {"2503.00001"})  # references outside the retrieved set are reported


def test_survey_bibtex_parses_with_bibtexparser():
    bib = render_bibtex(SOURCES + [SOURCES[0].model_copy(update={"id": "2503.00009"})])
    lib = bibtexparser.parse_string(bib)
    assert not lib.failed_blocks and len(lib.entries) == 5
    assert len({e.key for e in lib.entries}) == 5
    entry = lib.entries[3]
    assert entry["eprint"] == "2503.00004" and entry["author"] == "Barbara Liskov"


def test_survey_sentences_split_after_quotes():
    from survey.text import sentences

    assert len(sentences('They said "it works." It works. "Yes." Done')) == 4


def test_survey_scaffolding_labels_and_stray_brackets_removed():
    from survey.citations import strip_scaffolding

    text = "A framework for inference [ [4]. Paper [2]: Abstract: bar [1, 2] x [@2503.1]"
    assert strip_scaffolding(text) == "A framework for inference [4]. bar [1, 2] x [@2503.1]"
