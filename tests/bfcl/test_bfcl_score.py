"""Metrics, results-file scoring and `cpm eval bfcl --score`."""
from __future__ import annotations

import json

import pytest

from agents.bfcl.data import BfclCase, load_cases, resolve_categories
from agents.bfcl.metrics import call_counts, normalize_value
from agents.bfcl.score import score_file
from agents.errors import AgentError
from bfcl_answers import as_function_calling, as_prompting, perfect_calls
from tui.cli import main

TRUTH = [{"f": {"a": [1, ""], "b": ["Paris"]}}, {"g": {"c": [2.5]}}]
CASE = BfclCase("parallel_0", "parallel", [], [], TRUTH)


def test_bfcl_minicpm_normalize_value():
    assert normalize_value("3.0") == 3.0 and normalize_value("7") == 7
    assert normalize_value("TRUE") is True and normalize_value(" Paris ") == "paris"
    assert normalize_value([1]) == [1]


@pytest.mark.parametrize("decoded, expected", [
    ([{"f": {"b": "paris"}}, {"g": {"c": "2.5"}}], (2, 2, 2, 2)),   # MiniCPM normalisation makes these equal
    ([{"g": {"c": 2.5}}, {"f": {"a": 1, "b": "Paris"}}], (2, 2, 2, 2)),   # order-free
    ([{"f": {"a": 1}}, {"g": {"c": 2.5}}], (2, 2, 1, 1)),            # b is required by the answer
    ([{"f": {"b": "Rome"}}, {"g": {"c": 2.5, "d": 1}}], (2, 2, 1, 0)),  # d is not an answer parameter
    ([{"h": {}}], (2, 0, 0, 0)),
    (None, (2, 0, 0, 0)),
])
def test_bfcl_minicpm_call_counts(decoded, expected):
    c = call_counts(CASE, decoded)
    assert (c.calls, c.name, c.param_names, c.param_values) == expected


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bfcl_score_file_report(tmp_path, bfcl_dir):
    cases = load_cases(bfcl_dir, limit=4)
    rows = []
    for i, case in enumerate(cases):
        if case.ground_truth is None:
            rows.append({"id": case.id, "result": "No function applies."})
        elif i % 4 == 1:
            rows.append({"id": case.id, "result": "[not_a_function(x=1)]"})
        else:
            calls = perfect_calls(case)
            rows.append({"id": case.id, "result": as_prompting(calls) if i % 2 else as_function_calling(calls)})
    report = score_file(_write(tmp_path / "r.jsonl", rows), bfcl_dir)
    assert [c["id"] for c in report["cases"]] == [c.id for c in cases]
    bad = {c["id"] for c in report["cases"] if not c["valid"]}
    assert bad == {cases[i].id for i in range(len(cases)) if i % 4 == 1 and cases[i].ground_truth}
    overall = report["summary"]["overall"]
    assert overall["cases"] == 20 and overall["correct"] == 20 - len(bad)
    assert list(report["summary"]["categories"]) == resolve_categories(bfcl_dir, None)
    assert report["summary"]["categories"]["irrelevance"]["function_name_accuracy"] is None


def test_bfcl_cli_score(tmp_path, bfcl_dir, capsys):
    case = load_cases(bfcl_dir, ["simple"], limit=1)[0]
    results = _write(tmp_path / "r.jsonl", [{"id": case.id, "result": as_prompting(perfect_calls(case))}])
    assert main(["eval", "bfcl", "--score", str(results), "--data", str(bfcl_dir), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bfcl_report.json").read_text())
    assert report["cases"] == [{"id": case.id, "category": "simple_python", "valid": True, "error_type": None,
                                "error": ""}]
    assert "simple_python" in capsys.readouterr().out


@pytest.mark.parametrize("rows, message", [
    ([{"id": "simple_python_0"}], "needs `id` and `result`"),
    ([{"id": "nosuchcat_0", "result": "[]"}], "no question file"),
    ([{"id": "simple_python_99999", "result": "[]"}], "ids not in simple_python"),
])
def test_bfcl_bad_results_file(tmp_path, bfcl_dir, rows, message, capsys):
    path = _write(tmp_path / "r.jsonl", rows)
    with pytest.raises(AgentError, match=message):
        score_file(path, bfcl_dir)
    assert main(["eval", "bfcl", "--score", str(path), "--data", str(bfcl_dir)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_bfcl_bad_category(bfcl_dir):
    with pytest.raises(AgentError, match="present:"):
        resolve_categories(bfcl_dir, ["simple_java"])
