"""The events the agents send to the front ends: one frozen pydantic class per kind, two unions.

`agents.survey.runner.stream_survey` yields `SurveyEvent`s; `agents.tools.session.ToolSession.ask` yields
`ChatEvent`s. Front ends match on the classes (`isinstance`, `match`), never on strings, so a misspelt kind is
an error where it is written instead of an event that silently vanishes.

Each event's `event` field is its kind as a fixed literal: `to_dict()` gives the JSON form that the chat
transcript stores and `cpm chat --once --json` prints (unchanged from the dicts these classes replaced), and
`parse_chat_event` / `parse_survey_event` read it back, refusing an unknown kind or field.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from survey.outline import Outline


class Event(BaseModel):
    """Base of every event: immutable, and no field beyond those declared (a misspelt field is an error)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str

    def to_dict(self) -> dict[str, Any]:
        """The serialised form: `{"event": kind, **fields}`."""
        return self.model_dump()


# ---- survey (agents/survey) ---------------------------------------------------------------------------
# `section` is the body section's index in the outline; -1 is the plan / introduction, -2 the conclusion.

class SurveyStarted(Event):
    """A run began (or resumed: then the outline and the sections already checkpointed come with it)."""

    event: Literal["start"] = "start"
    thread_id: str
    topic: str
    run_id: str
    resume: bool
    settings: dict[str, Any]
    sections_done: list[int] = Field(default_factory=list)
    outline: Outline | None = None


class OutlineReady(Event):
    event: Literal["outline"] = "outline"
    outline: Outline


class StageStarted(Event):
    """A section entered a stage (`retrieve`, `queries`, `write`, `revise N`, `rewrite N`, `name N`)."""

    event: Literal["stage"] = "stage"
    section: int
    stage: str


class SectionToken(Event):
    """Text of a model call as it is decoded."""

    event: Literal["token"] = "token"
    section: int
    stage: str
    text: str


class SurveyStep(Event):
    """One model call's engine telemetry (agents/chat/telemetry.py), labelled with section and stage."""

    event: Literal["step"] = "step"
    section: int
    stage: str
    telemetry: dict[str, Any]


class Retry(Event):
    """The backend failed a call; it is tried again after a pause."""

    event: Literal["retry"] = "retry"
    section: int
    stage: str
    attempt: int
    error: str


class SectionDone(Event):
    """A body section is written; `sources` are its cited papers (id, title, authors, year, text)."""

    event: Literal["section_done"] = "section_done"
    section: int
    title: str
    cited: int
    seconds: float
    sources: list[dict[str, Any]] = Field(default_factory=list)


class NodeFinished(Event):
    """A graph node (`plan`, `dispatch`, `section`, `frame`, `render`) finished a step."""

    event: Literal["node"] = "node"
    node: str


class SectionsSaved(Event):
    """These sections are in the checkpoint now: a resumed run will not write them again."""

    event: Literal["saved"] = "saved"
    sections: list[int]


class SurveyDone(Event):
    """The survey is rendered; `trace["telemetry"]` holds every model call and their total."""

    event: Literal["done"] = "done"
    thread_id: str
    run_id: str
    wall_s: float
    markdown: str | None
    bibtex: str | None
    trace: dict[str, Any] | None


SurveyEvent = Annotated[Union[SurveyStarted, OutlineReady, StageStarted, SectionToken, SurveyStep, Retry,
                              SectionDone, NodeFinished, SectionsSaved, SurveyDone], Field(discriminator="event")]


# ---- chat with tools (agents/tools) -------------------------------------------------------------------

class Question(Event):
    event: Literal["question"] = "question"
    session: str
    text: str


class AnswerToken(Event):
    """Answer text as it is decoded."""

    event: Literal["token"] = "token"
    text: str


class ReasoningToken(Event):
    """Reasoning text as it is decoded; never part of the answer."""

    event: Literal["reasoning_token"] = "reasoning_token"
    text: str


class ModelStep(Event):
    """One model call of a turn: its number, engine telemetry and the reasoning it wrote."""

    event: Literal["step"] = "step"
    step: int
    telemetry: dict[str, Any]
    reasoning: str = ""


class InvalidCall(Event):
    """The model's tool calls could not be parsed; `error` is what the model is told."""

    event: Literal["invalid_call"] = "invalid_call"
    error: str


class ToolCall(Event):
    event: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    args: dict[str, Any]


class Approval(Event):
    """The user's answer for a call that needed approval."""

    event: Literal["approval"] = "approval"
    id: str
    name: str
    approved: bool


class ToolResult(Event):
    """A call's result (an error, a denial and a truncated text included)."""

    event: Literal["tool_result"] = "tool_result"
    id: str
    name: str
    text: str
    is_error: bool
    duration_s: float = 0.0
    truncated: bool = False
    denied: bool = False


class Answer(Event):
    """The turn's end: answer text, model calls, why it stopped, its tool calls, wall time and telemetry."""

    event: Literal["answer"] = "answer"
    session: str
    text: str
    steps: int
    stopped: str
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    wall_s: float
    telemetry: dict[str, Any] = Field(default_factory=dict)


ChatEvent = Annotated[Union[Question, AnswerToken, ReasoningToken, ModelStep, InvalidCall, ToolCall, Approval,
                            ToolResult, Answer], Field(discriminator="event")]

SURVEY_EVENTS: tuple[type[Event], ...] = (SurveyStarted, OutlineReady, StageStarted, SectionToken, SurveyStep,
                                          Retry, SectionDone, NodeFinished, SectionsSaved, SurveyDone)
CHAT_EVENTS: tuple[type[Event], ...] = (Question, AnswerToken, ReasoningToken, ModelStep, InvalidCall, ToolCall,
                                        Approval, ToolResult, Answer)

_survey = TypeAdapter(SurveyEvent)
_chat = TypeAdapter(ChatEvent)


def parse_survey_event(data: dict[str, Any]) -> Event:
    """A survey event from its `to_dict()` form; pydantic's ValidationError for an unknown kind or field."""
    return _survey.validate_python(data)


def parse_chat_event(data: dict[str, Any]) -> Event:
    """A chat event from its `to_dict()` form (a transcript row); ValidationError for an unknown kind or field."""
    return _chat.validate_python(data)
