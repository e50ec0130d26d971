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
    assert [s["at"] for s in r["loadavg_samples"]] == ["start", "section 0", "section 1", "end"]
    assert r["loadavg_1m_max"] >= r["loadavg_1m_mean"] >= 0


def test_survey_bench_missing_index(capsys, tmp_path):
    assert cli_main(["bench", "survey", "--index", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cpm bench: error:")


def test_survey_bench_bad_sections(capsys, survey_index):
    assert cli_main(["bench", "survey", "--index", str(survey_index), "--sections", "0"]) == 2
    assert "sections must be at least 1" in capsys.readouterr().err
