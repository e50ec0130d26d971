"""Prompt lookup decoding: a training-free drafter that copies from the context.

If the last few tokens (an n-gram, longest first) occurred earlier in the prompt or the generated text, the
tokens that followed that occurrence are proposed as the continuation (the most recent occurrence wins).
Retrieval-heavy writing (a survey quoting and citing its sources) repeats long spans of its context, which
this catches for free. Proposals are deterministic (no q): the verifier treats them as one-hot.
"""
from __future__ import annotations

import torch

from engine.speculative.drafter import Draft, empty_draft


class PromptLookupDrafter:
    uses_hidden = False  # commit() gets hidden=None; empty drafts cost a plain decode step

    # min_ngram 2: a single repeated token predicts its old continuation too rarely to pay for a tree pass
    def __init__(self, num_tokens: int = 8, max_ngram: int = 3, min_ngram: int = 2):
        if num_tokens < 1 or not 1 <= min_ngram <= max_ngram:
            raise ValueError("prompt lookup needs num_tokens >= 1 and 1 <= min_ngram <= max_ngram")
        self.num_tokens, self.max_ngram, self.min_ngram = num_tokens, max_ngram, min_ngram
        self._list: list[int] = []  # the context: prompt, root, then every committed token
        self._last: dict[tuple[int, ...], int] = {}  # n-gram -> start of its latest occurrence with a token after it

    @property
    def ids(self) -> torch.Tensor:
        return torch.tensor(self._list, dtype=torch.long)

    def start(self, prompt_ids: list[int], hidden: torch.Tensor, root: int) -> None:
        self._list, self._last = [], {}
        self._extend(list(prompt_ids) + [root])

    def commit(self, tokens: list[int], hidden: torch.Tensor) -> None:
        self._extend(tokens)

    def _extend(self, tokens: list[int]) -> None:
        """Index the n-grams that now have a token after them (those ending before the new last token): a step's
        lookup is then a few dict reads instead of a scan of the whole context (`lookup`, the same answer)."""
        ids, old = self._list, len(self._list)
        ids += tokens
        for end in range(max(0, old - 1), len(ids) - 1):  # n-gram ids[s:end + 1], followed by ids[end + 1]
            for n in range(self.min_ngram, self.max_ngram + 1):
                if end + 1 >= n:
                    self._last[tuple(ids[end + 1 - n:end + 1])] = end + 1 - n

    def propose(self, params=None) -> Draft:
        cont = self._indexed_lookup()
        if cont is None:
            return empty_draft()
        n = len(cont)
        return Draft(tokens=torch.tensor(cont, dtype=torch.long), parents=torch.arange(-1, n - 1, dtype=torch.long))

    def _indexed_lookup(self) -> list[int] | None:
        ids, L = self._list, len(self._list)
        for n in range(min(self.max_ngram, L - 1), self.min_ngram - 1, -1):
            s = self._last.get(tuple(ids[L - n:]))
            if s is not None:
                return ids[s + n:s + n + self.num_tokens]
        return None

    def lookup(self, ids: torch.Tensor) -> torch.Tensor | None:
        """The tokens after the most recent earlier occurrence of the longest matching suffix n-gram (a scan of
        the whole context; what the incremental index in propose() answers, kept as its reference)."""
        L = len(ids)
        for n in range(min(self.max_ngram, L - 1), self.min_ngram - 1, -1):
            windows = ids[:L - 1].unfold(0, n, 1)  # every n-gram that has at least one token after it
            hits = (windows == ids[L - n:]).all(dim=1).nonzero().flatten()
            if len(hits):
                start = int(hits[-1]) + n
                return ids[start:start + self.num_tokens]
        return None
