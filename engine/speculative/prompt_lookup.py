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
        self.ids = torch.zeros(0, dtype=torch.long)

    def start(self, prompt_ids: list[int], hidden: torch.Tensor, root: int) -> None:
        self.ids = torch.tensor(list(prompt_ids) + [root], dtype=torch.long)

    def commit(self, tokens: list[int], hidden: torch.Tensor) -> None:
        self.ids = torch.cat([self.ids, torch.tensor(tokens, dtype=torch.long)])

    def propose(self, params=None) -> Draft:
        cont = self.lookup(self.ids)
        if cont is None:
            return empty_draft()
        n = len(cont)
        return Draft(tokens=cont.clone(), parents=torch.arange(-1, n - 1, dtype=torch.long))  # a chain

    def lookup(self, ids: torch.Tensor) -> torch.Tensor | None:
        """The tokens after the most recent earlier occurrence of the longest matching suffix n-gram."""
        L = len(ids)
        for n in range(min(self.max_ngram, L - 1), self.min_ngram - 1, -1):
            windows = ids[:L - 1].unfold(0, n, 1)  # every n-gram that has at least one token after it
            hits = (windows == ids[L - n:]).all(dim=1).nonzero().flatten()
            if len(hits):
                start = int(hits[-1]) + n
                return ids[start:start + self.num_tokens]
        return None
