"""Reasoning written before an answer or a call, kept apart from both.

Two spellings are read: MiniCPM4-MCP's `<|thought_start|>...<|thought_end|>` and Qwen's `<think>...</think>`.
A block cut off before its close (max_tokens) is reasoning to the end of the text; a close with no open before
it means the open was in the prompt (templates that start the reply with `<think>`), so what precedes it is
reasoning. `ReasoningStreamSplitter` does the same split on a stream, token by token.
"""
from __future__ import annotations

import re

STYLES = {"think": ("<think>", "</think>"), "thought": ("<|thought_start|>", "<|thought_end|>")}
_OPENS = tuple(o for o, _ in STYLES.values())
_CLOSE_OF = {o: c for o, c in STYLES.values()}
_BLOCK = re.compile("|".join(f"{re.escape(o)}(.*?)(?:{re.escape(c)}|$)" for o, c in STYLES.values()), re.S)


def markers(style: str) -> tuple[str, str]:
    """(open, close) for a reasoning style name ("think" or "thought")."""
    from agents.errors import AgentError

    if style not in STYLES:
        raise AgentError(f"unknown reasoning style {style!r}: use {' or '.join(STYLES)}")
    return STYLES[style]


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, rest): every reasoning block's text, joined, and the text without the blocks."""
    text = text or ""
    reasoning: list[str] = []
    # A close before any open: the open was in the prompt.
    for open_, close in STYLES.values():
        at = text.find(close)
        if at >= 0 and open_ not in text[:at]:
            reasoning.append(text[:at])
            text = text[at + len(close):]
            break
    rest = _BLOCK.sub(lambda m: reasoning.append(next(g for g in m.groups() if g is not None)) or "", text)
    return "\n".join(r.strip() for r in reasoning if r.strip()), rest


class ReasoningStreamSplitter:
    """Feed token texts; get back `(reasoning, content)` pieces safe to show now.

    A tail that might be the start of a marker is held until the next piece shows whether it is one.
    """

    def __init__(self):
        self.pending = ""
        self.close: str | None = None  # the close marker awaited while inside a block

    def feed(self, piece: str) -> tuple[str, str]:
        self.pending += piece
        reasoning, content = [], []
        while True:
            targets = (self.close,) if self.close else _OPENS
            hit = min(((i, m) for m in targets if (i := self.pending.find(m)) >= 0), default=None)
            if hit is None:
                keep = _partial_len(self.pending, targets)
                (reasoning if self.close else content).append(self.pending[:len(self.pending) - keep])
                self.pending = self.pending[len(self.pending) - keep:]
                return "".join(reasoning), "".join(content)
            at, marker = hit
            (reasoning if self.close else content).append(self.pending[:at])
            self.pending = self.pending[at + len(marker):]
            self.close = None if self.close else _CLOSE_OF[marker]

    def flush(self) -> tuple[str, str]:
        out, self.pending = self.pending, ""
        return (out, "") if self.close else ("", out)


def _partial_len(text: str, markers_: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a marker."""
    for k in range(min(max(len(m) for m in markers_) - 1, len(text)), 0, -1):
        if any(m.startswith(text[-k:]) for m in markers_):
            return k
    return 0
