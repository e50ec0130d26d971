"""A chat session on the tool graph: turns streamed as events, messages checkpointed in SQLite per session,
so `--session ID` resumes a conversation after an exit, Ctrl-C or crash.

Events are the typed `agents.events.ChatEvent`s: `Question`, `AnswerToken` (answer text as it is decoded),
`ReasoningToken` (reasoning text as it is decoded, never part of the answer), `ModelStep` (one model call: its
number, engine telemetry and reasoning), `ToolCall`, `Approval`, `ToolResult`, `InvalidCall`, and last `Answer`
(text, steps, why the turn stopped, the turn's tool calls, wall time, and `telemetry`: the turn's steps and their
total). The CLI and the TUI render the same events; all but the token events go to the transcript.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

from agents.chat import telemetry
from agents.errors import AgentError
from agents.events import (Answer, AnswerToken, Approval, ChatEvent, Event, ModelStep, Question, ReasoningToken,
                           ToolCall, ToolResult)
from agents.tools.approval import ApprovalPolicy, ApproveFn
from agents.tools.configuration import Configuration
from agents.tools.graph import build_graph
from agents.tools.state import ToolAgentContext
from agents.tools.transcript import Transcript


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


class ToolSession:
    """`async with ToolSession(model=..., mcp=..., db_path=...) as chat: async for ev in chat.ask("..."): ...`"""

    def __init__(self, *, model: Any, mcp: Any, db_path: str | Path, settings: Configuration | None = None,
                 approve: ApproveFn | None = None, session_id: str | None = None, resume: bool = False,
                 model_name: str = ""):
        self.model, self.mcp, self.approve = model, mcp, approve
        self.db_path = Path(db_path)
        self.settings = settings or Configuration()
        self.policy = ApprovalPolicy.parse(self.settings.approve)   # fail before anything starts
        self.session_id = session_id
        self.resume = resume
        self.model_name = model_name
        self._saver_cm = None

    async def __aenter__(self) -> "ToolSession":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.transcript = Transcript(self.db_path)
        if self.resume:
            if not self.session_id or not self.transcript.exists(self.session_id):
                self.transcript.close()
                raise AgentError(f"no chat session {self.session_id!r} in {self.db_path}; "
                                 "list them with `cpm chat --list-sessions`")
        self._saver_cm = AsyncSqliteSaver.from_conn_string(str(self.db_path))
        saver = await self._saver_cm.__aenter__()
        self.graph = build_graph().compile(checkpointer=saver)
        if not self.resume:
            self.reset(self.session_id)
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.transcript.close()
        await self._saver_cm.__aexit__(*exc_info)

    def reset(self, session_id: str | None = None) -> str:
        """Start a new, empty session (the old one stays in the database, resumable by its id)."""
        self.session_id = session_id or new_session_id()
        servers = [s.name for s in self.mcp.servers()] if hasattr(self.mcp, "servers") else []
        self.transcript.create(self.session_id, self.model_name, servers)
        return self.session_id

    def _config(self) -> dict:
        # Each step is model or tools; the bound keeps a runaway loop from reaching LangGraph's own limit.
        return {"configurable": {"thread_id": self.session_id, **self.settings.model_dump()},
                "recursion_limit": 4 * self.settings.max_steps + 10}

    async def history(self) -> list[BaseMessage]:
        snapshot = await self.graph.aget_state(self._config())
        return list(snapshot.values.get("messages", [])) if snapshot.values else []

    async def ask(self, question: str) -> AsyncIterator[ChatEvent]:
        """Run one user turn, yielding events; every event is also written to the transcript."""
        if not question.strip():
            raise AgentError("empty question")
        if self.model is None:
            raise AgentError("ToolSession.model is not set: give the chat model before asking")
        started = time.perf_counter()
        tools = await self.mcp.list_tools()   # restarts crashed servers; the model sees what is there now
        context = ToolAgentContext(model=self.model, mcp=self.mcp, tools=tools, approve=self.approve)
        calls: dict[str, dict] = {}
        steps: list[dict] = []  # per model call: engine telemetry

        def record(event: Event) -> Event:
            self.transcript.add(self.session_id, event)
            return event

        yield record(Question(session=self.session_id, text=question))
        turn_input = {"messages": [HumanMessage(question)], "steps": 0}
        streamed = False
        async for mode, chunk in self.graph.astream(turn_input, self._config(), context=context,
                                                    durability="sync", stream_mode=["messages", "custom"]):
            if mode == "messages":
                message, meta = chunk
                if meta.get("langgraph_node") != "model" or not isinstance(message, AIMessage):
                    continue
                text = message.content if isinstance(message.content, str) else ""
                if isinstance(message, AIMessageChunk) and message.additional_kwargs.get("reasoning_content"):
                    yield ReasoningToken(text=message.additional_kwargs["reasoning_content"])
                # A model that cannot stream arrives here once, whole; a streaming one, in chunks.
                if text and (isinstance(message, AIMessageChunk) or not streamed):
                    streamed = streamed or isinstance(message, AIMessageChunk)
                    yield AnswerToken(text=text)
                continue
            if isinstance(chunk, ToolCall):
                calls[chunk.id] = {"name": chunk.name, "args": chunk.args, "approval": "not asked"}
            elif isinstance(chunk, Approval):
                calls[chunk.id]["approval"] = "approved" if chunk.approved else "denied"
            elif isinstance(chunk, ToolResult):
                calls[chunk.id].update(result=chunk.text, is_error=chunk.is_error, duration_s=chunk.duration_s)
            elif isinstance(chunk, ModelStep):
                steps.append({"step": chunk.step, **chunk.telemetry})
            yield record(chunk)
        values = (await self.graph.aget_state(self._config())).values
        last = values["messages"][-1]
        yield record(Answer(session=self.session_id, text=_text(last), steps=values.get("steps", 0),
                            stopped=values.get("stopped", "answer"), tool_calls=list(calls.values()),
                            wall_s=round(time.perf_counter() - started, 3), telemetry=telemetry.summary(steps)))


def _text(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.content)
