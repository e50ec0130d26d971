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
    """Counts a generation's tokens; `tick` returns a TokenRate at most every `every` seconds (a repaint of the
    header per token would cost more than the token)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.start = self._last = time.monotonic()
        self.tokens = 0

    def tick(self, n: int = 1) -> TokenRate | None:
        self.tokens += n
        now = time.monotonic()
        if now - self._last < self.every:
            return None
        self._last = now
        return TokenRate(self.tokens, now - self.start)

    def final(self) -> TokenRate:
        return TokenRate(self.tokens, time.monotonic() - self.start, done=True)
