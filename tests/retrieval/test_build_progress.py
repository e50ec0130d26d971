"""Build progress: stage lines from the start, plain progress lines into a pipe, an ETA weighted by work."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from retrieval import progress
from retrieval.progress import WorkBar


def test_eta_is_work_left_over_work_rate(monkeypatch):
    bar = WorkBar(True, "embedding 4 chunks", items=4, work=1000.0)
    bar.start = 100.0
    bar.done_items, bar.done_work = 1, 250.0   # the longest text first: a quarter of the work in 20 s
    line = bar.line(120.0)
    assert line == "embedding 4 chunks: 1/4 chunks (25%), 0:00:20 elapsed, about 0:01:00 left"


def test_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    with WorkBar(True, "embedding 3 chunks", 3, 30.0) as advance:
        advance(1, 20.0)
        advance(2, 10.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "embedding 3 chunks: 0/3 chunks"
    assert lines[1].startswith("embedding 3 chunks: 1/3 chunks (67%)") and "left" in lines[1]
    assert lines[-1].startswith("embedding 3 chunks: 3/3 chunks in ")
    with WorkBar(False, "quiet", 3, 30.0) as advance:
        advance(3, 30.0)
    assert capsys.readouterr().err == ""


def test_cli_build_says_each_stage_into_a_pipe(corpus_docs, minilm_path, tmp_path):
    papers = tmp_path / "papers.jsonl"
    papers.write_text("".join(json.dumps({"id": d.id, "title": d.title, "abstract": d.text}) + "\n"
                              for d in corpus_docs[:6]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "tui.cli", "index", "build", str(papers), "--index",
                           str(tmp_path / "idx"), "--max-seq-length", "32"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    n = int(re.search(r"6 documents -> (\d+) chunks", err).group(1))   # a long abstract makes two chunks
    stages = ["reading ", "read 6 documents", "chunking 6 new documents", "loading embedder minilm",
              f"embedding {n} chunks: 0/{n} chunks", f"embedding {n} chunks: {n}/{n} chunks in",
              "caching a traced copy", "writing the FAISS index"]
    positions = [err.find(s) for s in stages]
    assert -1 not in positions and positions == sorted(positions), err
    assert "Loading weights" not in err
    assert done.stdout.startswith("indexed 6 documents")
