"""The survey graph's plumbing on a real index with a test-double backend: retry, interrupt + resume, no hits."""
from __future__ import annotations

from contextlib import aclosing

import pytest

from agents.events import Retry, SectionDone, SectionsSaved, SurveyDone, SurveyStarted
from agents.survey.configuration import Configuration
from agents.survey.runner import stream_survey
from doubles import QuotingChat
from survey.errors import SurveyError
from survey.verify import citation_problems, parse_survey

TOPIC = "efficient inference for on-device language models"


async def _run(topic, model, retriever, db, settings=None, thread_id=None, resume=False, stop_after=None):
    events = []
    stream = stream_survey(topic, model=model, retriever=retriever, db_path=db, settings=settings,
                           thread_id=thread_id, resume=resume)
    async with aclosing(stream):
        async for ev in stream:
            events.append(ev)
            if stop_after and sum(len(e.sections) for e in events if isinstance(e, SectionsSaved)) >= stop_after:
                break  # like Ctrl-C once that section is checkpointed: the generator is closed mid-run
    return events


@pytest.fixture(scope="module")
def index(survey_index):
    from retrieval import Index

    return Index.open(survey_index)


async def test_survey_backend_failure_is_retried_and_reported(index, tmp_path):
    settings = Configuration(sections=3, words_per_section=60, backoff_s=0.0, write_mode="section")
    events = await _run(TOPIC, QuotingChat(fail_on=[3]), index, tmp_path / "ck.sqlite", settings)
    retries = [e for e in events if isinstance(e, Retry)]
    assert len(retries) == 1 and "scripted failure" in retries[0].error
    done = events[-1]
    assert isinstance(done, SurveyDone)
    assert done.trace["totals"]["retries"] == 1
    assert "ConnectionError" in done.trace["totals"]["errors"][0]
    parsed = parse_survey(done.markdown)
    assert len(parsed.sections) == 5  # introduction, 3 sections, conclusion
    retrieved = {d for s in done.trace["sections"] for d in s["retrieved_ids"]}
    assert citation_problems(done.markdown, retrieved) == []


async def test_survey_backend_down_stops_with_resume_hint_then_resumes(index, tmp_path):
    db = tmp_path / "ck.sqlite"
    settings = Configuration(sections=2, words_per_section=60, retries=1, backoff_s=0.0)
    start = None
    with pytest.raises(SurveyError, match="--resume"):
        async for ev in stream_survey(TOPIC, model=QuotingChat(fail_on=list(range(3, 50))), retriever=index,
                                      db_path=db, settings=settings):
            start = start or ev
    assert isinstance(start, SurveyStarted)
    events = await _run(None, QuotingChat(), index, db, thread_id=start.thread_id, resume=True)
    assert events[-1].markdown.count("\n## ") == 5


async def test_survey_interrupt_after_two_sections_resumes_without_rewriting_them(index, tmp_path):
    db = tmp_path / "ck.sqlite"
    settings = Configuration(sections=4, words_per_section=60, max_parallel=1)  # one at a time: stop after two
    first = await _run(TOPIC, QuotingChat(), index, db, settings, stop_after=2)
    thread, run1 = first[0].thread_id, first[0].run_id
    second = await _run(None, QuotingChat(), index, db, thread_id=thread, resume=True)
    assert second[0].sections_done == [0, 1] and second[0].outline is not None
    assert [e.section for e in second if isinstance(e, SectionDone)] == [2, 3]
    trace = second[-1].trace["sections"]
    assert all(s["grounded_sentences"] == 0 for s in trace if s["index"] >= 0)  # the summaries were kept
    runs = {s["index"]: s["run_id"] for s in trace}
    assert runs[0] == runs[1] == run1 and runs[2] == runs[3] == second[0].run_id != run1


class _NoHits:
    def search(self, query, k=10):
        return []


async def test_survey_no_hits_gives_a_clear_message(tmp_path):
    with pytest.raises(SurveyError, match="returned no documents for the topic"):
        await _run(TOPIC, QuotingChat(), _NoHits(), tmp_path / "ck.sqlite", Configuration(sections=2))


async def test_survey_resume_unknown_thread(tmp_path, index):
    with pytest.raises(SurveyError, match="no survey 'nope'"):
        await _run(None, QuotingChat(), index, tmp_path / "ck.sqlite", thread_id="nope", resume=True)
