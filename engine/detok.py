"""Incremental detokenization with stop strings, for streaming.

Text is released only when it is final: not ending in an incomplete UTF-8 character (decoded as U+FFFD) and
not possibly the start of a stop string. Decoding the whole generated sequence each step keeps byte-level
BPE merges across token boundaries exact (cost is microseconds at these lengths).
"""
from __future__ import annotations


class TextTracker:
    def __init__(self, tokenizer, stop: list[str]):
        self.tok = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already released
        self.text = ""  # decoded text so far (the final text once `stopped`)
        self.stopped = False  # a stop string was found

    def push(self, token_id: int) -> str:
        """Add one generated id; return the newly final text (may be "")."""
        self.ids.append(token_id)
        full = self.tok.decode(self.ids, skip_special_tokens=True)
        self.text = full
        if self.stop:
            begin = max(0, self.emitted - max(map(len, self.stop)))
            hits = [i for i in (full.find(s, begin) for s in self.stop) if i >= 0]
            if hits:
                self.text, self.stopped = full[:min(hits)], True
                return self._release(len(self.text))
        if full.endswith("\ufffd"):
            return ""
        return self._release(len(full) - self._held_back(full))

    def finish(self) -> str:
        """At the end of generation: release whatever was held back (an incomplete stop-string prefix)."""
        return self._release(len(self.text))

    def _held_back(self, full: str) -> int:
        """Length of the longest suffix of `full` that is a proper prefix of a stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(full)), best, -1):
                if full.endswith(s[:k]):
                    best = k
                    break
        return best

    def _release(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        out = self.text[self.emitted:upto]
        self.emitted = upto
        return out
