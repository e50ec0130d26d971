"""Acceptance (issue 10) on the real default model over a real index of the shared corpus, through `cpm survey`.

Slow on a shared 2-core CPU (minutes per survey), hence @slow: `pytest --run-slow tests/survey`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bibtexparser
import pytest

from survey.verify import citation_problems, parse_survey

TOPIC = "Efficient inference for on-device large language models"
SMALL = ["--words-per-section", "36", "--sources", "3", "--queries", "0"]


def _cpm(*args: str) -> list[str]:
    return [sys.executable, "-m", "tui.cli", *args]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _check_survey(md_path: Path, min_sections: int) -> dict:
    markdown = md_path.read_text()
    trace = json.loads(md_path.with_suffix(".trace.json").read_text())
    retrieved = {d for s in trace["sections"] for d in s["retrieved_ids"]} | set(trace["plan"]["retrieved_ids"])
    parsed = parse_survey(markdown)
    body = [s for s in parsed.sections if s.title not in ("Introduction", "Conclusion")]
    assert len(body) >= min_sections
    for sec in body:
        ids = parsed.section_ids(sec.title)
        assert len(ids) >= 3, f"{sec.title} cites {len(ids)} papers"
        assert ids <= retrieved
    assert citation_problems(markdown, retrieved) == []  # zero citations to non-retrieved documents
    assert parsed.references and all(f"[{n}]" in markdown for n in parsed.references)
    lib = bibtexparser.parse_string(md_path.with_suffix(".bib").read_text())
    assert not lib.failed_blocks and len(lib.entries) == len(parsed.references)
    return trace


@pytest.mark.slow
def test_survey_acceptance_five_sections_real_model(survey_index, smollm2_path, tmp_path):
    out = tmp_path / "survey.md"
    start = time.perf_counter()
    proc = subprocess.run(_cpm("survey", TOPIC, "--index", str(survey_index), "--sections", "5", *SMALL,
                               "--out", str(out), "--checkpoints", str(tmp_path / "ck.sqlite"), "--quiet"),
                          capture_output=True, text=True, env=_env(), timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trace = _check_survey(out, 5)
    print(f"5-section survey: {time.perf_counter() - start:.0f}s wall, {trace['totals']['output_tokens']} tokens, "
          f"{trace['totals']['decode_tok_s']} tok/s")


@pytest.mark.slow
def test_survey_acceptance_kill_after_two_sections_then_resume(survey_index, smollm2_path, tmp_path):
    out, db = tmp_path / "survey.md", tmp_path / "ck.sqlite"
    proc = subprocess.Popen(_cpm("survey", TOPIC, "--index", str(survey_index), "--sections", "4", *SMALL,
                                 "--out", str(out), "--checkpoints", str(db)),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env())
    thread, saved = None, 0
    for line in proc.stderr:  # rich prints plain lines when stderr is not a terminal
        if line.startswith("writing survey "):
            thread = line.split()[2]
        if line.startswith("checkpoint: section"):
            saved += 1
            if saved == 2:
                proc.send_signal(signal.SIGKILL)  # a crash: no cleanup, no graceful shutdown
                break
    proc.wait(timeout=60)
    assert thread and saved == 2 and proc.returncode == -signal.SIGKILL
    # no --out: the resumed run writes where the killed one was asked to
    resumed = subprocess.run(_cpm("survey", "--resume", thread, "--index", str(survey_index),
                                  "--checkpoints", str(db)), capture_output=True, text=True, env=_env(), timeout=1500)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trace = _check_survey(out, 4)
    runs = {s["index"]: s["run_id"] for s in trace["sections"]}
    assert runs[0] == runs[1] != trace["last_run"]["run_id"]  # the two sections were reused, not rewritten
    assert runs[2] == runs[3] == trace["last_run"]["run_id"]
