"""`cpm bench survey`: its figures from a real survey run (test-double backend, real index) and its user errors.

The real default model on a 6-section survey takes ~10 minutes on CPU; that run is the benchmark itself
(docs/retrieval.md records it), not a test.
"""
from __future__ import annotations

import argparse
import asyncio

from agents.survey.configuration import Configuration
from doubles import QuotingChat
from tui.cli import main as cli_main


def test_survey_bench_figures_from_a_run(survey_index):
    from bench.survey import load_sample, run_survey, summarize
    from retrieval import Index

    args = argparse.Namespace(topic="efficient inference for on-device language models")
    samples: list[dict] = []
    load_sample(samples, "start")
    done = asyncio.run(run_survey(args, QuotingChat(), Index.open(survey_index), Configuration(sections=2), samples))
    load_sample(samples, "end")
    r = summarize(done, load_s=1.0, samples=samples)
    assert r["sections"] == 2 and len(r["cited_per_section"]) == 2
    assert r["output_tokens"] > 0 and r["calls"] >= 4 and r["wall_s"] > 0
    assert r["end_to_end_tok_s"] > 0
    at = [s["at"] for s in r["loadavg_samples"]]
    assert at[0] == "start" and at[-1] == "end" and sorted(at[1:-1]) == ["section 0", "section 1"]  # any order
    assert r["loadavg_1m_max"] >= r["loadavg_1m_mean"] >= 0


def test_survey_bench_missing_index(capsys, tmp_path):
    assert cli_main(["bench", "survey", "--index", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cpm bench: error:")


def test_survey_bench_bad_sections(capsys, survey_index):
    assert cli_main(["bench", "survey", "--index", str(survey_index), "--sections", "0"]) == 2
    assert "sections must be at least 1" in capsys.readouterr().err


def test_survey_quality_bench_counts_what_a_reader_notices(survey_index):
    """`cpm bench survey_quality`'s prose measures on a survey with each fault once (real index documents)."""
    from bench.survey_quality import prose_measures
    from retrieval import Index
    from survey.text import sentences

    index = Index.open(survey_index)
    first, second = (index.get(h.id) for h in index.search("speculative decoding", k=2))
    copied = next(s for s in sentences(first.text) if len(s.split()) >= 8).rstrip(".")
    markdown = (f"# Survey\n\n## Introduction\n\nDraft models propose tokens that a target model checks.\n\n"
                f"## {first.title}\n\n{copied} [1]. This paper contributes to the field of by drafting [2]. "
                f"{copied} [1].\n\n## Conclusion\n\nVerification keeps the output of the target model.\n\n"
                f"## References\n\n[1] {first.title}. A, 2025. arXiv:{first.id}\n"
                f"[2] {second.title}. B, 2025. arXiv:{second.id}\n")
    m = prose_measures(markdown, index)
    assert m["title_headings"] == 1 and m["unfilled_templates"] == 1 and m["repeated_sentences"] == 1
    assert m["verbatim_share"] == 2 / 5  # the copied sentence, twice, of five sentences
    assert m["repeated_4gram_rate"] > 0 and m["cited_per_section_min"] == 2
