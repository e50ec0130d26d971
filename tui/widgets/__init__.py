"""Widgets of the TUI: one per panel; and what the panels share (cancelling, the live token rate)."""
from __future__ import annotations

import time

from textual.message import Message


def cancel_workers(node, group: str) -> bool:
    """Cancel `node`'s workers of `group` (Esc stops the running generation); True when one was running."""
    running = any(w.group == group and w.is_running for w in node.workers)
    node.workers.cancel_group(node, group)
    return running


class TokenRate(Message):
    """Tokens decoded so far in the running generation and the seconds it has taken: the header shows the rate."""

    def __init__(self, tokens: int, seconds: float, done: bool = False) -> None:
        super().__init__()
        self.tokens, self.seconds, self.done = tokens, seconds, done

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class RateMeter:
    """Counts a generation's tokens from the first one on (model loading and prefill are not decode speed);
    `tick` returns a TokenRate at most every `every` seconds (a header repaint per token would cost more than
    the token)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.start: float | None = None
        self._last = 0.0
        self.tokens = 0   # tokens after the first

    def tick(self) -> TokenRate | None:
        now = time.monotonic()
        if self.start is None:
            self.start = self._last = now
            return None
        self.tokens += 1
        if now - self._last < self.every:
            return None
        self._last = now
        return TokenRate(self.tokens, now - self.start)

    def final(self) -> TokenRate:
        return TokenRate(self.tokens, time.monotonic() - self.start if self.start else 0.0, done=True)
