"""Human-label agreement: FActScore's labelled format, the skip when no data exists, bad files."""
import json
import subprocess
import sys

import pytest

from survey.errors import SurveyError
from survey.factscore import LexicalJudge
from survey.factscore.agreement import agreement, read_labelled


def test_factscore_agreement_skips_without_data(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tui.cli", "bench", "factscore_agreement", "--index", "x",
                           "--data", str(tmp_path / "absent")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("skipped: no human-labelled")


def test_factscore_agreement_on_labelled_format(fs_papers, fs_index, tmp_path):
    doc, copied, altered = fs_papers[0]
    record = {"topic": doc.title, "annotations": [{"text": copied, "human-atomic-facts": [
        {"text": copied, "label": "S"}, {"text": altered, "label": "NS"}, {"text": "I think so.", "label": "IR"}]}]}
    (tmp_path / "labels.jsonl").write_text(json.dumps(record) + "\n")
    facts = list(read_labelled(tmp_path))
    assert [f.supported for f in facts] == [True, False]
    result = agreement(facts, LexicalJudge(), fs_index)
    assert result["accuracy"] == 1.0 and result["human_factscore"] == 0.5 and result["error_rate"] == 0.0


def test_factscore_agreement_rejects_other_formats(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"annotations": [{"human-atomic-facts": [{"text": "a"}]}]}\n')
    with pytest.raises(SurveyError, match="labelled format"):
        list(read_labelled(tmp_path))
