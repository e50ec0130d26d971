"""The FactScore pipeline on a real index with the model-free lexical judge: scores, malformed input, resume."""
import json
import subprocess
import sys

import pytest

from survey.factscore import FactScoreConfig, LexicalJudge, evaluate
from survey.factscore.cache import ClaimCache

SENTENCES = FactScoreConfig(extract_with_model=False, k=3)


def run(text, index, cache=None):
    return evaluate(text, llm=None, index=index, judge=LexicalJudge(), config=SENTENCES, cache=cache)


def test_factscore_lexical_orders_the_three_texts(fs_texts, fs_index):
    faithful, altered, wrong = (run(fs_texts[k], fs_index) for k in ("faithful", "altered", "wrong_cites"))
    assert faithful["factscore"] == 1.0 and faithful["citation_precision"] == 1.0
    assert faithful["citation_recall"] == 1.0 and faithful["problems"] == []
    assert altered["factscore"] <= 0.25 and altered["citation_precision"] <= 0.25
    assert wrong["citation_precision"] == 0.0
    assert [s["section"] for s in faithful["per_section"]] == ["Methods", "Results"]
    claim = faithful["claims"][0]
    assert claim["support_source"] == "cited" and claim["evidence_ids"][0].startswith(claim["cited_docs"][0])
    assert faithful["factscore_length_penalized"] < faithful["factscore"]  # 4 claims < gamma = 10


def test_factscore_malformed_input_is_reported(fs_texts, fs_index):
    no_refs = fs_texts["faithful"].split("## References")[0]
    report = run(no_refs, fs_index)
    assert any("no references list" in p for p in report["problems"])
    assert report["citation_precision"] == 0.0 and report["claims"]
    out_of_range = fs_texts["faithful"].replace("[2].", "[9].")
    report = run(out_of_range, fs_index)
    assert any("[9] is not in the references list" in p for p in report["problems"])
    empty = run("", fs_index)
    assert empty["factscore"] is None and any("nothing to score" in p for p in empty["problems"])


def test_factscore_unknown_reference_is_reported(fs_index):
    text = "## Intro\nSparse attention makes long contexts cheap [1].\n\n## References\n[1] No such paper. X, 2020.\n"
    report = run(text, fs_index)
    assert any("reference [1]" in p and "matches no index document" in p for p in report["problems"])
    assert report["claims"][0]["supported_by_citation"] is False


def test_factscore_rerun_resumes_from_cache(fs_texts, fs_index, tmp_path):
    path = tmp_path / "cache.sqlite"
    first = run(fs_texts["altered"], fs_index, ClaimCache(path))
    second = run(fs_texts["altered"], fs_index, ClaimCache(path))
    assert first["cache_hits"] == 0 and second["cache_hits"] > 0
    assert [c["verdict"] for c in first["claims"]] == [c["verdict"] for c in second["claims"]]


def cpm(*args):
    return subprocess.run([sys.executable, "-m", "tui.cli", "eval", "factscore", *args],
                          capture_output=True, text=True, timeout=300)


def test_factscore_cli_writes_report(fs_texts, fs_index_dir, tmp_path):
    survey = tmp_path / "survey.md"
    survey.write_text(fs_texts["wrong_cites"])
    out = tmp_path / "report.json"
    done = cpm(str(survey), "--index", str(fs_index_dir), "--out", str(out), "--judge", "lexical",
               "--extract", "sentence")
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert {"factscore", "per_section", "claims"} <= set(report) and report["citation_precision"] == 0.0
    assert "overall" in done.stdout


@pytest.mark.parametrize("args, needle", [(["missing.md", "--index", "x"], "missing.md"),
                                          (["{survey}", "--index", "/nonexistent/index"], "index")])
def test_factscore_cli_user_errors_are_one_line(args, needle, tmp_path):
    survey = tmp_path / "s.md"
    survey.write_text("# x\n")
    done = cpm(*[a.format(survey=survey) for a in args], "--judge", "lexical", "--extract", "sentence")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr


def test_factscore_default_judge_orders_the_three_texts(fs_texts, fs_index, minilm_path):
    from survey.factscore.choose import choose_judge

    judge = choose_judge("auto", None, "none")
    faithful, altered, wrong = (evaluate(fs_texts[k], llm=None, index=fs_index, judge=judge, config=SENTENCES)
                                for k in ("faithful", "altered", "wrong_cites"))
    assert faithful["factscore"] == 1.0 and faithful["citation_precision"] == 1.0
    assert altered["citation_precision"] == 0.0 and altered["factscore"] <= 0.25
    assert wrong["citation_precision"] == 0.0
    assert judge.name == faithful["judge"]


def test_factscore_progress_reports_every_sentence_with_batches(fs_texts, fs_index):
    seen = []
    evaluate(fs_texts["faithful"], llm=None, index=fs_index, judge=LexicalJudge(), config=SENTENCES,
             progress=lambda done, total, section: seen.append((done, total)))
    assert seen[-1] == (4, 4) and [d for d, _ in seen] == sorted(d for d, _ in seen)
