"""The survey trace carries one telemetry step per model call (labelled with section and stage), the same steps
stream out as `SurveyStep` events, and the totals are their sums (test-double backend: no engine telemetry, so each
step is built from the call's usage and timing)."""
from __future__ import annotations

import pytest
from doubles import QuotingChat

from agents.chat.telemetry import stats_table
from agents.events import SurveyDone, SurveyStep
from agents.survey.configuration import Configuration
from agents.survey.runner import stream_survey

ADDITIVE = ("prompt_tokens", "generated_tokens", "prefill_s", "decode_s", "generations")


@pytest.fixture(scope="module")
def index(survey_index):
    from retrieval import Index

    return Index.open(survey_index)


async def test_survey_trace_telemetry_sums_its_steps(index, tmp_path):
    settings = Configuration(sections=2, words_per_section=40, sources_per_section=2, min_citations=2)
    events = [e async for e in stream_survey("efficient inference on device", model=QuotingChat(), retriever=index,
                                             db_path=tmp_path / "ck.sqlite", settings=settings)]
    assert isinstance(events[-1], SurveyDone)
    trace = events[-1].trace
    steps, total = trace["telemetry"]["steps"], trace["telemetry"]["total"]
    streamed = [e for e in events if isinstance(e, SurveyStep)]
    assert len(steps) == len(streamed) == trace["totals"]["calls"] > 0
    assert all(s.telemetry in steps for s in streamed)   # each streamed step is one of the trace's steps
    assert [(s["section"], s["stage"]) for s in steps][0] == (-1, "name 1")  # planning: the model names group 1
    for key in ADDITIVE:
        assert total[key] == pytest.approx(sum(s[key] for s in steps)), key
    assert total["generated_tokens"] == trace["totals"]["output_tokens"]
    for entry in trace["sections"]:  # each section's total is the sum of its own steps
        # planning (naming the groups) is labelled section -1 too
        mine = [s for s in steps if s["section"] == entry["index"] and not s["stage"].startswith("name")]
        assert entry["telemetry"]["generated_tokens"] == sum(s["generated_tokens"] for s in mine)
    table = stats_table(steps, label_keys=("section", "stage")).splitlines()
    assert table[-1].startswith("total") and len(table) == len(steps) + 4
