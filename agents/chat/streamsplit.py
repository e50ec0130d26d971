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


class ResponseTagDropper:
    """Drops `<tool_response>` / `</tool_response>` tags from answer text, streamed or whole.

    The prompt shows tool results wrapped in these tags (agents.chat.prompting); a small model copies the wrapper
    into its answer. They are prompt format, never answer text: the text they wrap is kept. A piece that may be
    the start of a tag is held until the next one shows whether it is.
    """

    TAGS = ("<tool_response>\n", "</tool_response>\n", "<tool_response>", "</tool_response>")

    def __init__(self):
        self.held = ""

    def feed(self, piece: str) -> str:
        text = self.held + piece
        for tag in self.TAGS:
            text = text.replace(tag, "")
        keep = _partial_tail(text, self.TAGS)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep] if keep else text

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


def drop_response_tags(text: str) -> str:
    dropper = ResponseTagDropper()
    return dropper.feed(text) + dropper.flush()


def _partial_tail(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a marker."""
    best = 0
    for m in markers:
        for k in range(min(len(m) - 1, len(text)), 0, -1):
            if text.endswith(m[:k]):
                best = max(best, k)
                break
    return best
