"""Generation: resumable results file, run settings guard, and a real run on the default model (slow)."""
from __future__ import annotations

import json

import pytest

from agents.bfcl.data import load_cases
from agents.bfcl.generate import RESULTS_NAME, GenerationConfig, generate_and_score
from agents.errors import AgentError
from bfcl_answers import as_function_calling, perfect_calls
from tui.cli import main


def _seed(path, cases, config):
    with open(path, "w") as f:
        for case in cases:
            result = [] if case.ground_truth is None else as_function_calling(perfect_calls(case))
            f.write(json.dumps({"id": case.id, "mode": config.mode, "model": config.model, "result": result}) + "\n")


def test_bfcl_resume_skips_done_cases(tmp_path, bfcl_dir):
    config = GenerationConfig(model="smollm2-135m", constrained=True)
    cases = load_cases(bfcl_dir, limit=2)
    _seed(tmp_path / RESULTS_NAME, cases, config)
    # Every case is already there, so no model is built; the report covers exactly the selected cases.
    report = generate_and_score(bfcl_dir, tmp_path, config, limit=2)
    assert report["summary"]["overall"]["accuracy"] == 1.0 and len(report["cases"]) == len(cases)
    assert report["run"]["mode"] == "constrained"
    smaller = generate_and_score(bfcl_dir, tmp_path, config, ["parallel"], limit=1)
    assert [c["id"] for c in smaller["cases"]] == ["parallel_0"]


def test_bfcl_resume_refuses_other_run(tmp_path, bfcl_dir):
    cases = load_cases(bfcl_dir, ["simple"], limit=1)
    _seed(tmp_path / RESULTS_NAME, cases, GenerationConfig(model="smollm2-135m", constrained=False))
    with pytest.raises(AgentError, match="another --out"):
        generate_and_score(bfcl_dir, tmp_path, GenerationConfig(model="smollm2-135m", constrained=True), ["simple"], 1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["--constrained", "--free"])
def test_bfcl_generate_on_default_model(tmp_path, bfcl_dir, smollm2_path, mode):
    pytest.importorskip("agents.chat.factory")
    argv = ["eval", "bfcl", "--data", str(bfcl_dir), "--categories", "simple_python", "irrelevance",
            "--limit", "1", "--max-tokens", "24", "--model", "smollm2-135m", "--backend", "engine",
            "--out", str(tmp_path), mode, "--json"]
    assert main(argv) == 0
    lines = (tmp_path / RESULTS_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == ["simple_python_0", "irrelevance_0"]
    assert {r["mode"] for r in records} == {mode.strip("-")}
    report = json.loads((tmp_path / "bfcl_report.json").read_text())
    assert [c["id"] for c in report["cases"]] == ["simple_python_0", "irrelevance_0"]
    assert main(argv) == 0                                    # resumed: nothing new generated
    assert (tmp_path / RESULTS_NAME).read_text().splitlines() == lines


def test_bfcl_resume_refuses_other_spec(tmp_path, bfcl_dir):
    cases = load_cases(bfcl_dir, ["simple"], limit=1)
    _seed(tmp_path / RESULTS_NAME, cases, GenerationConfig(model="smollm2-135m", constrained=True))
    with pytest.raises(AgentError, match="spec none"):
        generate_and_score(bfcl_dir, tmp_path, GenerationConfig(model="smollm2-135m", constrained=True,
                                                                spec="prompt-lookup"), ["simple"], 1)


def test_bfcl_bad_spec_is_refused_before_loading(tmp_path, bfcl_dir, capsys):
    assert main(["eval", "bfcl", "--data", str(bfcl_dir), "--limit", "1", "--spec", "medusa",
                 "--out", str(tmp_path)]) == 2
    assert "spec must be none, prompt-lookup or eagle:DIR" in capsys.readouterr().err
    assert not (tmp_path / RESULTS_NAME).exists()


@pytest.mark.slow
def test_bfcl_report_records_the_serving_setup(tmp_path, bfcl_dir, smollm2_path):
    """Constrained, with the prompt-lookup drafter: the report says so, and which weights (int4 layers) ran."""
    argv = ["eval", "bfcl", "--data", str(bfcl_dir), "--categories", "simple_python", "--limit", "1",
            "--max-tokens", "24", "--model", "smollm2-135m", "--backend", "engine", "--spec", "prompt-lookup",
            "--constrained", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    serving = json.loads((tmp_path / "bfcl_report.json").read_text())["run"]["serving"]
    assert serving["backend"] == "engine" and serving["spec"] == "prompt-lookup"
    assert serving["decoding"] == "constrained" and serving["grammar"] == "xgrammar"
    assert serving["weights_file"].endswith("Q4_1.gguf") and serving["weights"]["int4/g32"] == 120


def test_the_config_names_the_backend_and_model_it_will_use(monkeypatch):
    """Records and the report name the model (they held null for the defaults, and `describe` said "default")."""
    from agents.bfcl.generate import GenerationConfig

    for var in ("CPM_BACKEND", "CPM_MODEL", "CPM_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    config = GenerationConfig()
    assert (config.backend, config.model) == ("engine", "smollm2-135m")
    assert config.describe() == "smollm2-135m (engine), free"
    monkeypatch.setenv("CPM_BASE_URL", "http://127.0.0.1:9/v1")
    assert (GenerationConfig().backend, GenerationConfig().model) == ("openai", None)  # the server names it


def test_bfcl_resume_command_and_progress_lines(bfcl_dir, tmp_path):
    """Ctrl-C prints this command (same cases, settings and --out); without a terminal the progress is a line
    per case with an ETA."""
    import io

    from tui.cli import build_parser
    from tui.eval_commands.bfcl import CaseProgress, resume_command

    args = build_parser().parse_args(["eval", "bfcl", "--data", str(bfcl_dir), "--categories", "simple_python",
                                      "--limit", "3", "--tool-choice", "required", "--max-tokens", "64"])
    args.out, args.constrained = str(tmp_path), True
    assert resume_command(args) == (f"cpm eval bfcl --data {bfcl_dir} --out {tmp_path} --categories simple_python "
                                    "--limit 3 --max-tokens 64 --tool-choice required")
    stream = io.StringIO()
    with CaseProgress(stream) as progress:
        progress.update(0, 2, "")
        progress.update(1, 2, "simple_python_0")
    assert stream.getvalue().startswith("[1/2] simple_python_0  eta 0:0")


def test_bfcl_tool_choice_goes_with_fc_mode(bfcl_dir, tmp_path, capsys):
    assert main(["eval", "bfcl", "--data", str(bfcl_dir), "--free", "--tool-choice", "required",
                 "--out", str(tmp_path)]) == 2
    assert "does not go with --free" in capsys.readouterr().err
    config = GenerationConfig(model="smollm2-135m", constrained=True, tool_choice="required")
    assert config.choice_for("multiple") == "required" and config.choice_for("irrelevance") == "auto"
    assert config.choice_label == "required (irrelevance: auto)"
