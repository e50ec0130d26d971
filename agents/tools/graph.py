"""The tool graph: model -> tools (approved calls run in parallel) -> model ... until an answer or the step limit.

Nodes are async `(state, config, runtime) -> Command`. Tool failures, denials, unknown tools and unparsable
calls all go back to the model as text, so a turn always ends with an answer. Progress goes out on LangGraph's
custom stream as typed events (`agents.events`); model tokens on the "messages" stream. Each model call sends a
`ModelStep` with its engine telemetry (agents/chat/telemetry.py) and the reasoning it wrote, if any.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from agents.chat.telemetry import StepTelemetry
from agents.events import Approval, InvalidCall, ModelStep, ToolCall, ToolResult
from agents.tools import prompts
from agents.tools.approval import ApprovalPolicy, ask
from agents.tools.configuration import Configuration
from agents.tools.history import past_turns_as_answers, trim_history
from agents.tools.state import ToolAgentContext, ToolAgentState


def _invalid_calls(reply: AIMessage) -> list[dict]:
    # ChatEngine puts unparsable calls on `invalid_tool_calls`; when streamed, langchain rebuilds the message
    # from chunks and keeps them only in response_metadata.
    return list(reply.invalid_tool_calls or []) or list(reply.response_metadata.get("invalid_tool_calls") or [])


def _question(messages: list) -> str:
    """The current turn's question (its last human message that is not a note the graph added)."""
    for m in reversed(messages):
        if isinstance(m, HumanMessage) and not (m.additional_kwargs or {}).get("cpm_note"):
            return m.content if isinstance(m.content, str) else str(m.content)
    return ""


def _tool_rounds(messages: list) -> int:
    """Rounds of tool results in the current turn (since its question)."""
    rounds, previous = 0, None
    for m in messages:
        if isinstance(m, HumanMessage) and not (m.additional_kwargs or {}).get("cpm_note"):
            rounds = 0
        elif isinstance(m, ToolMessage) and not isinstance(previous, ToolMessage):
            rounds += 1
        previous = m
    return rounds


def step_telemetry(reply: AIMessage, wall_s: float) -> dict:
    """The reply's engine telemetry; for a backend that reports none, its usage counts and wall time."""
    telemetry = reply.response_metadata.get("telemetry")
    if telemetry is not None:
        return dict(telemetry)
    usage = reply.usage_metadata or {}
    return StepTelemetry(prompt_tokens=usage.get("input_tokens", 0), generated_tokens=usage.get("output_tokens", 0),
                         decode_s=wall_s, generations=1, attention="unknown").as_dict()


async def model(state: ToolAgentState, config: RunnableConfig,
                runtime: Runtime[ToolAgentContext]) -> Command[Literal["tools", "model", "__end__"]]:
    """Ask the model for an answer or tool calls; on the last allowed step, for an answer without tools.

    Returns:
        Command to `tools` when the reply has tool calls, back to `model` when its calls could not be parsed,
        else to the end.
    """
    cfg = Configuration.from_runnable_config(config)
    ctx = runtime.context
    steps = state.get("steps", 0) + 1
    messages = [SystemMessage(cfg.system_prompt or prompts.SYSTEM),
                *past_turns_as_answers(trim_history(state["messages"], cfg.max_history_chars))]
    last_step = steps >= cfg.max_steps
    rounds_done = _tool_rounds(state["messages"])
    answer_now = last_step or rounds_done >= cfg.tool_rounds
    if answer_now or not ctx.tools:
        if answer_now and isinstance(state["messages"][-1], ToolMessage):
            messages.append(HumanMessage(prompts.STEP_LIMIT.format(question=_question(state["messages"]))))
        runnable = ctx.model
    else:
        # "required" binds only the turn's first call: after the results come in, the model must be free to answer.
        # One forced call, not several: under a grammar that allows more, a small model repeats the call until
        # max_tokens cuts the last one off.
        forced = ({"tool_choice": "required", "parallel_tool_calls": False}
                  if cfg.tool_choice == "required" and steps == 1 else {})
        runnable = ctx.model.bind_tools([spec.as_openai_tool() for spec in ctx.tools], **forced)
    start = time.perf_counter()
    reply = await runnable.ainvoke(messages, max_tokens=cfg.max_tokens,
                                   **({"reasoning": cfg.reasoning} if cfg.reasoning else {}))
    get_stream_writer()(ModelStep(step=steps, telemetry=step_telemetry(reply, time.perf_counter() - start),
                                  reasoning=reply.additional_kwargs.get("reasoning_content", "")))
    update: dict[str, Any] = {"messages": [reply], "steps": steps}
    if reply.tool_calls and not answer_now:
        return Command(goto="tools", update=update)
    invalid = _invalid_calls(reply)
    if invalid and not answer_now:
        from agents.chat.toolcalls import format_errors_for_model

        errors = format_errors_for_model(invalid)
        get_stream_writer()(InvalidCall(error=errors))
        update["messages"].append(HumanMessage(prompts.INVALID_CALLS.format(errors=errors),
                                               additional_kwargs={"cpm_note": True}))
        return Command(goto="model", update=update)
    update["stopped"] = "step_limit" if last_step and steps > 1 else "answer"
    return Command(goto=END, update=update)


async def tools(state: ToolAgentState, config: RunnableConfig,
                runtime: Runtime[ToolAgentContext]) -> Command[Literal["model"]]:
    """Ask approval where the policy wants it (one question at a time), then run the approved calls in
    parallel. A denied call is never run; the model is told it was denied.

    Returns:
        Command back to `model` with one ToolMessage per call.
    """
    cfg = Configuration.from_runnable_config(config)
    ctx = runtime.context
    policy = ApprovalPolicy.parse(cfg.approve)
    emit = get_stream_writer()
    calls = state["messages"][-1].tool_calls
    approved = []
    for call in calls:
        emit(ToolCall(id=call["id"], name=call["name"], args=call["args"]))
        ok = True
        if policy.needs_approval(call["name"]):
            ok = await ask(ctx.approve, call["name"], call["args"])
            emit(Approval(id=call["id"], name=call["name"], approved=ok))
        approved.append(ok)

    async def run_one(call: dict, ok: bool) -> ToolMessage:
        if not ok:
            message = ToolMessage(prompts.DENIED.format(name=call["name"]), tool_call_id=call["id"],
                                  name=call["name"], status="error", artifact={"denied": True})
            emit(ToolResult(id=call["id"], name=call["name"], text=message.content, is_error=True, denied=True))
            return message
        result = await ctx.mcp.call(call["name"], call["args"])
        emit(ToolResult(id=call["id"], name=result.name, text=result.text, is_error=result.is_error,
                        duration_s=round(result.duration_s, 4), truncated=result.truncated))
        return ToolMessage(result.text, tool_call_id=call["id"], name=call["name"],
                           status="error" if result.is_error else "success", artifact=result.as_dict())

    messages = await asyncio.gather(*(run_one(c, ok) for c, ok in zip(calls, approved)))
    return Command(goto="model", update={"messages": list(messages)})


def build_graph() -> StateGraph:
    """The uncompiled graph; compile it with a checkpointer (see `agents.tools.session`)."""
    builder = StateGraph(ToolAgentState, context_schema=ToolAgentContext)
    builder.add_node("model", model)
    builder.add_node("tools", tools)
    builder.add_edge(START, "model")
    return builder
