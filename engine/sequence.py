"""One request's state, from submission to its GenerationResult, and the handle its caller holds.

The sequence is fed by whoever runs it (the scheduler's steps, or a row-cache job for speculative and CUDA
requests): `append(token)` records a generated id, applies the stops and the budget and streams the new text;
`finish` is the one place a request ends, in a result or an error, for every path.
"""
from __future__ import annotations

import itertools
import queue
import time
from typing import Iterator

import torch

from engine.detok import TextTracker
from engine.errors import EngineError
from engine.results import GenerationResult, StreamChunk
from engine.sampling import Sampler, SamplingParams

_ids = itertools.count()


class Sequence:
    def __init__(self, prompt_ids: list[int], params: SamplingParams, tokenizer, eos_ids: set[int],
                 max_seq_len: int, device: torch.device):
        self.id = next(_ids)
        self.prompt_len = len(prompt_ids)
        self.token_ids = list(prompt_ids)  # prompt + generated: what a recompute after preemption prefills
        self.params = params
        self.sampler = Sampler(params, prompt_ids, device)
        self.text = TextTracker(tokenizer, params.stop)
        self.stops = eos_ids | set(params.stop_token_ids)
        self.budget = min(params.max_tokens, max_seq_len - len(prompt_ids))
        # paged KV state (engine/block_manager.py): slots [0, num_computed) of token_ids hold K/V
        self.block_table: list[int] = []
        self.block_keys: list[bytes] = []
        self.num_computed = 0
        self.num_cached_tokens = 0  # of those, taken from the prefix cache at the last admission
        self.cached_tokens = 0  # prompt tokens served from the prefix cache at the first admission (reported)
        self.admitted = False
        self.cancelled = False  # set by the caller's thread (Request.cancel); the loop frees the blocks
        self.spec = None  # SpecStats, on the speculative path
        self.finish_reason: str | None = None
        self.last_stop: int | None = None
        self.out: queue.SimpleQueue = queue.SimpleQueue()  # StreamChunks, then the result chunk or an exception
        self.t_submit = time.perf_counter()
        self.t_start: float | None = None  # first scheduled step
        self.t_first: float | None = None  # first token sampled

    @property
    def generated(self) -> list[int]:
        """Ids appended so far (speculative acceptance may have recorded more in the sampler already)."""
        return self.token_ids[self.prompt_len:]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing that rewrites the logits: the pick is the argmax, which the loop may take for many
        rows at once on the device."""
        p = self.params
        return p.temperature == 0 and p.repetition_penalty == 1.0 and not p.logits_processors \
            and not p.no_repeat_ngram_size

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def started(self) -> None:
        if self.t_start is None:
            self.t_start = time.perf_counter()

    def sample(self, logits: torch.Tensor) -> int:
        """logits float32 [V] for the position after the last token -> the next id (recorded)."""
        return self.sampler(logits)

    def append(self, tok: int) -> bool:
        """One generated id (already recorded in the sampler): stream its text, apply stop ids, stop strings and
        the budget. Returns True when the sequence has finished (its result is then sent)."""
        if self.t_first is None:
            self.t_first = time.perf_counter()
        self.token_ids.append(tok)
        if tok in self.stops:  # EOS / stop token: recorded in token_ids, never in the text
            self.last_stop = tok
            self.finish("stop")
            return True
        piece = self.text.push(tok)
        if piece or not self.text.stopped:
            self.out.put(StreamChunk(piece, tok, None))
        if self.text.stopped:
            self.finish("stop")
        elif len(self.token_ids) - self.prompt_len >= self.budget:
            self.finish("length")
        return self.finished

    def finish(self, reason: str) -> None:
        """End the request: the held-back text and the GenerationResult go to the caller."""
        if self.finished:
            return
        self.finish_reason = reason
        now = time.perf_counter()
        start = self.t_start if self.t_start is not None else now
        first = self.t_first if self.t_first is not None else now
        tail = self.text.finish()
        gen = list(self.generated)
        result = GenerationResult(self.text.text, gen, reason, self.prompt_len, len(gen), first - start, now - first,
                                  spec=self.spec, queue_s=start - self.t_submit, cached_tokens=self.cached_tokens)
        self.out.put(StreamChunk(tail, self.last_stop, result))

    def fail(self, exc: BaseException) -> None:
        """End the request with an error, raised in the caller's thread."""
        if not self.finished:
            self.finish_reason = "error"
            self.out.put(exc)


class Request:
    """The caller's handle on a submitted sequence: iterate it for StreamChunks (the last carries the result),
    `result()` to wait for the end, `cancel()` to stop it (its KV blocks are freed before the next step)."""

    def __init__(self, seq: Sequence, wake):
        self._seq, self._wake, self._result = seq, wake, None

    @property
    def id(self) -> int:
        return self._seq.id

    @property
    def done(self) -> bool:
        return self._result is not None

    def cancel(self) -> None:
        if not self._seq.finished:
            self._seq.cancelled = True
            self._wake()

    def __iter__(self) -> Iterator[StreamChunk]:
        while self._result is None:
            item = self._seq.out.get()
            if isinstance(item, BaseException):
                self._result = False
                raise item
            if item.result is not None:
                self._result = item.result
            yield item

    def result(self) -> GenerationResult:
        for _ in self:
            pass
        if not isinstance(self._result, GenerationResult):
            raise EngineError("the request ended in an error (already raised)")
        return self._result
