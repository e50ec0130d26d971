"""The typed agent events (agents/events.py): every class round-trips through its serialised form, the form is
the one saved transcripts and `cpm chat --json` already hold, and an unknown kind or field cannot be made."""
from __future__ import annotations

import json
import sqlite3
from typing import get_args

import pytest
from pydantic import ValidationError

from agents import events as ev
from agents.errors import AgentError
from agents.tools.transcript import Transcript

OUTLINE = {"title": "A survey of quantization", "sections": [
    {"title": "Weight-only quantization", "goal": "covers int4 weights", "source_ids": ["2401.00001"],
     "keyphrases": ["int4"], "named_by": "model", "rejected_name": ""}]}
TELEMETRY = {"prompt_tokens": 12, "generated_tokens": 3, "decode_s": 0.1}

SAMPLES: list[ev.Event] = [
    ev.SurveyStarted(thread_id="t-1", topic="quantization", run_id="r1", resume=True, settings={"sections": 1},
                     sections_done=[0], outline=OUTLINE),
    ev.OutlineReady(outline=OUTLINE),
    ev.StageStarted(section=0, stage="write"),
    ev.SectionToken(section=0, stage="write", text="Quant"),
    ev.SurveyStep(section=-1, stage="name 1", telemetry=TELEMETRY),
    ev.Retry(section=0, stage="write", attempt=1, error="ConnectionError: down"),
    ev.SectionDone(section=0, title="Weight-only quantization", cited=1, seconds=2.5,
                   sources=[{"id": "2401.00001", "title": "Int4", "authors": ["A. B."], "year": 2024, "text": "x"}]),
    ev.NodeFinished(node="frame"),
    ev.SectionsSaved(sections=[0]),
    ev.SurveyDone(thread_id="t-1", run_id="r1", wall_s=9.5, markdown="# A survey", bibtex="@article{x}",
                  trace={"telemetry": {"steps": [TELEMETRY]}}),
    ev.Question(session="s1", text="What time is it?"),
    ev.AnswerToken(text="It is"),
    ev.ReasoningToken(text="the user wants"),
    ev.ModelStep(step=1, telemetry=TELEMETRY, reasoning=""),
    ev.InvalidCall(error="arguments are not JSON"),
    ev.ToolCall(id="c1", name="time.get_current_time", args={"timezone": "UTC"}),
    ev.Approval(id="c1", name="time.get_current_time", approved=False),
    ev.ToolResult(id="c1", name="time.get_current_time", text="denied", is_error=True, denied=True),
    ev.Answer(session="s1", text="Noon.", steps=2, stopped="answer", tool_calls=[{"name": "t.x"}], wall_s=1.2,
              telemetry={"steps": [TELEMETRY], "total": TELEMETRY}),
]


def test_the_unions_hold_exactly_the_listed_classes_and_every_class_has_a_sample():
    assert set(get_args(get_args(ev.SurveyEvent)[0])) == set(ev.SURVEY_EVENTS)
    assert set(get_args(get_args(ev.ChatEvent)[0])) == set(ev.CHAT_EVENTS)
    assert {type(e) for e in SAMPLES} == set(ev.SURVEY_EVENTS) | set(ev.CHAT_EVENTS)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips_through_its_json_form(event):
    parse = ev.parse_survey_event if type(event) in ev.SURVEY_EVENTS else ev.parse_chat_event
    data = json.loads(json.dumps(event.to_dict()))
    assert data["event"] == event.event
    back = parse(data)
    assert type(back) is type(event) and back == event


def test_an_unknown_kind_or_field_cannot_be_constructed():
    with pytest.raises(ValidationError):
        ev.parse_chat_event({"event": "tool_cal", "id": "c1", "name": "t.x", "args": {}})
    with pytest.raises(ValidationError):
        ev.parse_survey_event({"event": "section_finished", "section": 0})
    with pytest.raises(ValidationError):
        ev.ToolCall(event="tool_cal", id="c1", name="t.x", args={})   # the kind is fixed per class
    with pytest.raises(ValidationError):
        ev.SectionDone(section=0, title="x", cited=1, secs=2.0)       # a misspelt field
    with pytest.raises(ValidationError):
        ev.parse_chat_event({"event": "step", "section": 0, "stage": "write", "telemetry": {}})  # survey's step
    event = ev.Approval(id="c1", name="t.x", approved=True)
    with pytest.raises(ValidationError):
        event.approved = False                                          # frozen


def test_serialised_form_is_the_one_saved_files_and_cli_json_hold():
    """Field order and names as the dicts these classes replaced (transcript rows, `cpm chat --once --json`)."""
    result = ev.ToolResult(id="c1", name="t.x", text="ok", is_error=False, duration_s=0.5)
    assert result.to_dict() == {"event": "tool_result", "id": "c1", "name": "t.x", "text": "ok", "is_error": False,
                                "duration_s": 0.5, "truncated": False, "denied": False}
    answer = SAMPLES[-1].to_dict()
    assert list(answer) == ["event", "session", "text", "steps", "stopped", "tool_calls", "wall_s", "telemetry"]
    assert ev.OutlineReady(outline=OUTLINE).to_dict() == {"event": "outline", "outline": OUTLINE}


def test_transcript_reads_rows_back_as_typed_events_and_names_an_unreadable_one(tmp_path):
    db = tmp_path / "s.db"
    transcript = Transcript(db)
    transcript.create("s1")
    chat = [e for e in SAMPLES if type(e) in ev.CHAT_EVENTS]
    for event in chat:
        transcript.add("s1", event)
    assert transcript.events("s1") == chat
    assert transcript.sessions()[0]["title"] == "What time is it?"
    with sqlite3.connect(db) as conn:   # a row from another version: a kind this one does not know
        conn.execute("INSERT INTO chat_events VALUES ('s1', 99, 0, 'bogus', '{\"event\": \"bogus\"}')")
    with pytest.raises(AgentError, match="event 99 cannot be read"):
        transcript.events("s1")
    transcript.close()
