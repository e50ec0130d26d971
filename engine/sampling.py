"""Sampling parameters and the per-sequence sampler.

Order, as transformers applies them: repetition penalty, no-repeat n-grams, the caller's logits processors,
temperature, top-k, top-p, min-p. Temperature 0 means greedy (argmax after penalty and processors, so constrained
decoding works greedily too).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

import torch

from engine.errors import EngineError


class LogitsProcessor(Protocol):
    """Called once per decode step per sequence before sampling; `generated` = ids generated so far."""

    def __call__(self, generated: list[int], logits: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # > 1 makes every id already in the prompt or the output less likely
    # n > 0: an n-gram of generated ids never repeats (the ids that would complete a repeat are banned); the
    # prompt is not looked at, so a reply may still quote it (transformers' rule also scans the prompt)
    no_repeat_ngram_size: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # stop strings (not included in the text)
    stop_token_ids: list[int] = field(default_factory=list)  # besides the model's EOS ids
    logits_processors: list[LogitsProcessor] = field(default_factory=list)
    # speculative drafter: "none" | "auto" | "prompt-lookup" | "eagle:DIR" (engine/speculative; output is unchanged;
    # "auto" is prompt lookup that decodes plain wherever verifying its drafts does not pay)
    spec: str = "none"

    def validate(self) -> None:
        if self.max_tokens < 1:
            raise EngineError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise EngineError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise EngineError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise EngineError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.top_k < 0:
            raise EngineError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise EngineError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            raise EngineError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        if not (self.spec in ("none", "auto", "prompt-lookup") or (self.spec.startswith("eagle:") and len(self.spec) > 6)):
            raise EngineError(f"spec must be none, prompt-lookup or eagle:DIR, or auto, got {self.spec!r}")


class Sampler:
    """One sequence's sampling state: its RNG and the ids the repetition penalty looks at."""

    def __init__(self, params: SamplingParams, prompt_ids: list[int], device: torch.device):
        self.p = params
        self.generated: list[int] = []
        self.gen = None
        if params.temperature > 0:
            self.gen = torch.Generator(device=device)
            # no seed: fresh OS entropy (torch.seed() would also reseed the global RNG behind the caller's back)
            self.gen.manual_seed(params.seed if params.seed is not None else int.from_bytes(os.urandom(7), "little"))
        self.seen = torch.tensor(sorted(set(prompt_ids)), dtype=torch.long, device=device) \
            if params.repetition_penalty != 1.0 else None

    def __call__(self, logits: torch.Tensor) -> int:
        """logits float32 [V] -> the next token id (also recorded in `generated`)."""
        logits = self.process(logits)
        if self.p.temperature == 0:
            tok = int(torch.argmax(logits))
        else:
            tok = int(torch.multinomial(self.probs(logits), 1, generator=self.gen))
        self.record(tok)
        return tok

    # The three steps of __call__, separately: speculative verification scores several candidate tokens
    # at one position before recording the one it keeps.
    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """Repetition penalty and the logits processors, for the position after `generated`."""
        p = self.p
        if self.seen is not None and len(self.seen):
            score = logits[self.seen]
            logits = logits.clone()
            logits[self.seen] = torch.where(score < 0, score * p.repetition_penalty, score / p.repetition_penalty)
        banned = banned_ngram_ids(self.generated, p.no_repeat_ngram_size)
        if banned:
            logits = logits.index_fill(0, torch.tensor(banned, device=logits.device), float("-inf"))
        for proc in p.logits_processors:
            logits = proc(self.generated, logits)
        return logits

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Processed logits [V] -> the sampling distribution (temperature, top-k, top-p, min-p); temperature > 0."""
        return torch.softmax(_warp(logits / self.p.temperature, self.p), -1)

    def record(self, tok: int) -> None:
        self.generated.append(tok)
        if self.seen is not None:
            self.seen = torch.unique(torch.cat([self.seen, self.seen.new_tensor([tok])]))


def banned_ngram_ids(generated: list[int], n: int) -> list[int]:
    """The ids that would complete an n-gram already present in `generated` (transformers'
    NoRepeatNGramLogitsProcessor over the generated ids): every id that followed an earlier occurrence of the last
    n - 1 ids."""
    if n <= 0 or len(generated) < n:
        return []
    if n == 1:
        return sorted(set(generated))
    tail = generated[len(generated) - n + 1:]
    return sorted({generated[i + n - 1] for i in range(len(generated) - n + 1) if generated[i:i + n - 1] == tail})


def _warp(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """top-k, top-p, min-p filtering of one row [V]; removed entries become -inf (at least one survives)."""
    neg = float("-inf")
    if p.top_k > 0 and p.top_k < logits.numel():
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, neg)
    if p.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum <= 1 - p.top_p
        remove[-1] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(0, idx, remove), neg)
    if p.min_p > 0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < p.min_p * probs.max(), neg)
    return logits
