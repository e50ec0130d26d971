"""Which past messages the model sees: whole turns, newest first, within a character budget.

A small model's context is a few thousand tokens; cutting mid-turn would leave tool results without the
call that asked for them, which chat templates reject, so turns are dropped whole from the oldest.

Earlier turns are shown as their question and final answer only (`past_turns_as_answers`): their tool calls,
results, denials and error notices belong to those turns. Shown whole, SmolLM2-135M answered a second question
with the first question's denial message.
"""
from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage


def _size(message: BaseMessage) -> int:
    content = message.content if isinstance(message.content, str) else str(message.content)
    return len(content) + sum(len(str(c.get("args"))) for c in getattr(message, "tool_calls", None) or [])


def trim_history(messages: list[BaseMessage], max_chars: int) -> list[BaseMessage]:
    """The newest whole turns (a turn starts at a human message) that fit in `max_chars`; the current turn
    is always kept, whatever its size."""
    starts = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage) and not _is_note(m)] or [0]
    keep_from = starts[-1]
    used = sum(_size(m) for m in messages[keep_from:])
    for start in reversed(starts[:-1]):
        turn = sum(_size(m) for m in messages[start:keep_from])
        if used + turn > max_chars:
            break
        used += turn
        keep_from = start
    return messages[keep_from:]


def past_turns_as_answers(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Every turn before the current one reduced to its question and its final answer; the current turn whole."""
    starts = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage) and not _is_note(m)]
    if len(starts) < 2:
        return list(messages)
    out: list[BaseMessage] = []
    for begin, end in zip(starts, starts[1:]):
        turn = messages[begin:end]
        answer = next((m for m in reversed(turn) if isinstance(m, AIMessage) and not m.tool_calls), None)
        out.append(turn[0])
        if answer is not None:
            out.append(AIMessage(content=answer.content))
    return out + list(messages[starts[-1]:])


def _is_note(message: BaseMessage) -> bool:
    """Human messages the graph adds inside a turn (invalid-call notices, the answer request)."""
    return bool((message.additional_kwargs or {}).get("cpm_note"))
