"""A short coverage-guided session per target when atheris is installed; the long runs are in
docs/reliability.md. The seed corpus is the hypothesis tests' valid inputs, so libFuzzer mutates real files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")
HERE = Path(__file__).resolve().parent


def seeds(tmp_path: Path, target: str) -> Path:
    from tests.gguf_bytes import gguf_bytes, tiny_llama_kv

    folder = tmp_path / "seeds"
    folder.mkdir()
    first = {"gguf": gguf_bytes(tiny_llama_kv()),
             "hf_config": json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32,
                                      "intermediate_size": 64, "num_hidden_layers": 1,
                                      "num_attention_heads": 2}).encode(),
             "request": json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                    "stop": ["x"], "temperature": 0.5}).encode()}[target]
    (folder / "seed").write_bytes(first)
    return folder


@pytest.mark.parametrize("target", ["gguf", "hf_config", "request"])
def test_atheris_short_session(tmp_path, target):
    # -rss_limit_mb=0: Linux carries the parent's peak RSS (pytest holding a model) into the child's
    # getrusage, which libFuzzer would read as this process running out of memory at its first input
    out = subprocess.run([sys.executable, str(HERE / "atheris_run.py"), target, "-atheris_runs=3000",
                          "-timeout=10", "-rss_limit_mb=0", f"-artifact_prefix={tmp_path}/",
                          str(seeds(tmp_path, target))],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Done 3000 runs" in out.stderr or "DONE" in out.stderr.upper(), out.stderr[-1000:]
