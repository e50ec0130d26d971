"""`cpm survey` / `cpm demo` user errors: one line on stderr, exit code 2."""
from __future__ import annotations

from tui.cli import main


def test_survey_cli_needs_index(capsys):
    assert main(["survey", "speculative decoding"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--index DIR is required" in err[0]


def test_survey_cli_missing_index_dir(capsys, tmp_path):
    assert main(["survey", "speculative decoding", "--index", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cpm survey: error:")


def test_survey_cli_resume_needs_topic_or_id(capsys, tmp_path):
    assert main(["survey", "--index", str(tmp_path)]) == 2
    assert "--resume THREAD_ID" in capsys.readouterr().err


def test_survey_demo_missing_corpus_file(capsys, tmp_path):
    assert main(["demo", "--corpus", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "none.jsonl does not exist" in err[-1]


def test_survey_demo_picks_on_topic_documents_first():
    from retrieval.types import Document
    from tui.commands.demo import pick_documents

    docs = [Document(id=str(i), title=t, text="") for i, t in
            enumerate(["Graph coloring", "Efficient inference on device", "Protein folding", "Inference servers"])]
    picked = pick_documents(docs, "Efficient inference for on-device large language models", 3)
    assert [d.id for d in picked] == ["1", "3", "0"]
    assert pick_documents(docs, "anything", None) == docs


def test_survey_cli_resume_of_an_unknown_id_fails_before_the_model_loads(capsys, tmp_path):
    assert main(["survey", "--resume", "nosuch-1234", "--index", str(tmp_path),
                 "--checkpoints", str(tmp_path / "ck.sqlite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no survey 'nosuch-1234'" in err[0] and "no interrupted survey" in err[0]


def test_survey_cli_names_the_flag_it_refuses(capsys, tmp_path):
    assert main(["survey", "topic", "--index", str(tmp_path), "--parallel", "0"]) == 2
    assert "--parallel must be at least 1 (got 0)" in capsys.readouterr().err


def test_survey_out_is_remembered_for_resume(tmp_path):
    from tui.commands.survey import record_out, recorded_out

    db = tmp_path / "ck.sqlite"
    assert recorded_out(db, "t1") is None
    record_out(db, "t1", tmp_path / "a.md")
    record_out(db, "t2", tmp_path / "b.md")
    assert recorded_out(db, "t1") == tmp_path / "a.md" and recorded_out(db, "t2") == tmp_path / "b.md"


def test_stats_rows_are_named_not_numbered():
    from tui.commands.survey import step_label

    assert [step_label(s) for s in ({"section": -1, "stage": "plan"}, {"section": 0, "stage": "queries"},
                                    {"section": -2, "stage": "conclusion"})] == ["plan", "section 1 queries",
                                                                                 "conclusion"]
