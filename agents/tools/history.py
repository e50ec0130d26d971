"""Which past messages the model sees: whole turns, newest first, within a character budget.

A small model's context is a few thousand tokens; cutting mid-turn would leave tool results without the
call that asked for them, which chat templates reject, so turns are dropped whole from the oldest.
"""
from __future__ import annotations

from langchain_core.messages import BaseMessage, HumanMessage


def _size(message: BaseMessage) -> int:
    content = message.content if isinstance(message.content, str) else str(message.content)
    return len(content) + sum(len(str(c.get("args"))) for c in getattr(message, "tool_calls", None) or [])


def trim_history(messages: list[BaseMessage], max_chars: int) -> list[BaseMessage]:
    """The newest whole turns (a turn starts at a human message) that fit in `max_chars`; the current turn
    is always kept, whatever its size."""
    starts = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)] or [0]
    keep_from = starts[-1]
    used = sum(_size(m) for m in messages[keep_from:])
    for start in reversed(starts[:-1]):
        turn = sum(_size(m) for m in messages[start:keep_from])
        if used + turn > max_chars:
            break
        used += turn
        keep_from = start
    return messages[keep_from:]
