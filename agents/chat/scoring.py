"""The model's own score of whole alternatives: log p(continuation | prompt), summed over its tokens.

Greedy decoding under a grammar chooses token by token: between tool names, the first token decides, so a
small model that likes `calculate` writes `calculate_...` whatever follows. Where the grammar allows a short
list of alternatives (the tool names; later an enum), the runner instead reads the probability of each whole
alternative, as the model would have produced it (teacher forcing), and takes the most likely one
(agents.chat.choose). This is the model's own likelihood: no keyword matching, no other model.

One engine sequence per alternative, submitted together: the engine's scheduler decodes them in one batch and
its prefix cache shares the prompt's full KV blocks among them.
"""
from __future__ import annotations

import torch


class _Forcer:
    """A LogitsProcessor that records log p(target) at each step, then forces the target token."""

    def __init__(self, targets: list[int]):
        self.targets = targets
        self.logprobs: list[float] = []

    def __call__(self, generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        target = self.targets[len(generated)]
        self.logprobs.append(float(torch.log_softmax(logits.float().view(-1), -1)[target]))
        forced = torch.full_like(logits, float("-inf"))
        forced.view(-1)[target] = 0.0
        return forced


def continuation_logprobs(engine, prompt_ids: list[int], continuations: list[list[int]]) -> list[list[float]]:
    """Per-token log-probabilities of each continuation (token ids) after `prompt_ids`, all in one batch."""
    return pair_logprobs(engine, [(prompt_ids, c) for c in continuations])


def pair_logprobs(engine, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
    """Per-token log-probabilities of each (prompt ids, continuation ids) pair, all submitted at once."""
    from engine import SamplingParams

    forcers = [_Forcer(list(c)) for _, c in pairs]
    requests = []
    try:
        for (prompt_ids, _), forcer in zip(pairs, forcers):
            if forcer.targets:
                params = SamplingParams(max_tokens=len(forcer.targets), temperature=0.0,
                                        logits_processors=[forcer])
                requests.append(engine.submit(list(prompt_ids), params))
        for request in requests:
            request.result()
    finally:
        for request in requests:
            if not request.done:
                request.cancel()
    return [f.logprobs for f in forcers]


def best_alternative(engine, tokenizer, prompt: str, alternatives: list[str]) -> tuple[int, list[float]]:
    """Index of the most likely alternative text after `prompt` (summed log-probability) and every score.

    Each alternative is tokenized together with the prompt (`prompt + alternative`), as the engine would read
    it, and only its own tokens are scored.
    """
    base = tokenizer.encode(prompt, add_special_tokens=False)
    joined = [tokenizer.encode(prompt + alt, add_special_tokens=False) for alt in alternatives]
    # The shared prompt tokens: where prompt and alternative tokenize alike (BPE may merge across the seam).
    shared = min([common_prefix(base, ids) for ids in joined] or [len(base)])
    prompt_ids = base[:shared]
    scores = [sum(lps) for lps in continuation_logprobs(engine, prompt_ids, [ids[shared:] for ids in joined])]
    best = max(range(len(alternatives)), key=scores.__getitem__)
    return best, scores


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
