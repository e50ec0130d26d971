"""Stream prose to the user while holding back tool-call markup, which is parsed once the reply is complete.

Text that might be the start of a marker (`<tool`, `<|tool_call_st`) is held until the next token shows it is
not; once a marker appears everything after it is kept for the parser, so streamed content never shows raw
`<tool_call>` JSON.
"""
from __future__ import annotations

from agents.chat.toolcalls import CALL_MARKERS


class ToolCallStreamSplitter:
    """Feed token texts; get back the prose that is safe to show now."""

    def __init__(self, markers: tuple[str, ...] = CALL_MARKERS):
        self.markers = markers
        self.text = ""  # everything fed so far (what the parser reads at the end)
        self.emitted = 0  # how much of `text` has been released as prose
        self.in_call = False

    def feed(self, piece: str) -> str:
        self.text += piece
        if self.in_call:
            return ""
        hits = [i for m in self.markers if (i := self.text.find(m, self.emitted)) >= 0]
        if hits:
            self.in_call = True
            return self._release(min(hits))
        return self._release(len(self.text) - self._partial_marker_len())

    def flush(self) -> str:
        """At the end: prose still held back because it looked like the start of a marker."""
        return "" if self.in_call else self._release(len(self.text))

    def _release(self, upto: int) -> str:
        out = self.text[self.emitted:upto]
        self.emitted = max(self.emitted, upto)
        return out

    def _partial_marker_len(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a marker."""
        tail = self.text[self.emitted:]
        best = 0
        for m in self.markers:
            for k in range(min(len(m) - 1, len(tail)), 0, -1):
                if tail.endswith(m[:k]):
                    best = max(best, k)
                    break
        return best
