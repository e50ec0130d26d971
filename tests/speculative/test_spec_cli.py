"""`cpm generate --spec`: same tokens as without, accepted-length fields in --json, clear errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def cpm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=300)


def test_generate_spec_prompt_lookup_same_tokens(smollm2_path):
    base = ["generate", "Repeat after me: red, green, blue, red, green, blue.", "--chat", "--device", "cpu",
            "--max-tokens", "24", "--json"]
    plain, spec = cpm(*base), cpm(*base, "--spec", "prompt-lookup")
    assert plain.returncode == 0 and spec.returncode == 0, spec.stderr
    a, b = json.loads(plain.stdout), json.loads(spec.stdout)
    assert a["tokens"] == b["tokens"] and a["text"] == b["text"]
    assert "spec" not in a
    s = b["spec"]
    assert s["drafter"] == "prompt-lookup" and s["steps"] >= 1 and s["mean_accepted_length"] >= 1.0
    assert 0.0 <= s["acceptance_rate"] <= 1.0


def test_generate_bad_spec_is_one_line_exit_2():
    r = cpm("generate", "hi", "--spec", "medusa")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "spec must be none, prompt-lookup or eagle:DIR" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a third model load in a subprocess
def test_generate_eagle_missing_dir_is_clear(smollm2_path, tmp_path):
    r = cpm("generate", "hi", "--device", "cpu", "--max-tokens", "4", "--spec", f"eagle:{tmp_path / 'nope'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_generate_bad_json_schema_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "schema.json"
    bad.write_text("{not json")
    r = cpm("generate", "hi", "--json-schema", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "not valid JSON" in r.stderr


@pytest.mark.slow  # a model load and grammar compilation in a subprocess
def test_generate_json_schema_with_spec_same_tokens(smollm2_path, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string"}},
                                  "required": ["name"]}))
    base = ["generate", "Give a JSON object with a name.", "--chat", "--device", "cpu", "--max-tokens", "24",
            "--json", "--json-schema", str(schema)]
    a, b = cpm(*base), cpm(*base, "--spec", "prompt-lookup")
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["tokens"] == jb["tokens"] and ja["text"].startswith("{")


def _fresh_tree(dst):
    """The repository's tracked files only (as a fresh clone has them: no out/, no trained heads, no caches)."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    names = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        if (root / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dst / name)
    return dst


@pytest.mark.slow  # five model loads in subprocesses, a few training steps on CPU (about 2 min on a quiet box)
def test_fresh_clone_trains_a_head_and_generates_with_eagle_and_auto(smollm2_path, bfcl_dir, tmp_path):
    """From a fresh checkout: `cpm spec prompts` + `cpm spec train --self-distill` make a head from the default
    model's own answers, and `cpm generate --spec eagle:DIR` / `--spec auto` give plain decoding's tokens."""
    import os

    tree = _fresh_tree(tmp_path / "clone")
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=tree, env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    run("spec", "prompts", "--from", str(bfcl_dir / "BFCL_v4_simple_python.json"), "--out", "out/p.jsonl")
    report = json.loads(run("spec", "train", "--corpus", "out/p.jsonl", "--self-distill", "2", "--gen-tokens", "16",
                            "--gen-batch", "2", "--steps", "2", "--batch", "2", "--seq-len", "32", "--top", "2048",
                            "--device", "cpu", "--out", "out/head", "--json").stdout)
    assert report["distill_prompts"] == 2 and (tree / "out/head/freq_2048.pt").is_file()
    base = ["generate", "Repeat after me: red, green, blue, red, green, blue.", "--chat", "--device", "cpu",
            "--max-tokens", "20", "--json"]
    plain = json.loads(run(*base).stdout)
    eagle = json.loads(run(*base, "--spec", "eagle:out/head").stdout)
    auto = json.loads(run(*base, "--spec", "auto").stdout)
    assert eagle["tokens"] == plain["tokens"] == auto["tokens"]
    assert eagle["spec"]["steps"] >= 1 and auto["spec"]["auto"]["plain_steps"] >= 1
