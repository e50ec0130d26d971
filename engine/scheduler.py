"""Which sequences run in the next step, and how many of their tokens (nano-vllm / vLLM v1 style).

A sequence's uncomputed tokens are token_ids[num_computed:]: the whole prompt at first, one token (the last
sampled) while decoding, prompt + generated after a preemption. Each step gives every running sequence up to
one chunk, first come first served, within a token budget: a decoding sequence takes 1 token, a prefilling one
the rest of its prompt up to the next multiple of `chunk` (fixed boundaries, so how a prompt is cut never depends
on what else is running), and at least one prefill chunk runs per step so long prompts always advance. A long
prompt therefore costs the running streams at most one chunk of latency per step instead of stalling them.
Waiting sequences are admitted in order while there are blocks for their prompt and room in max_running. When a
running sequence needs a block and none is free, the most recently admitted sequence is preempted: its blocks
are freed and it goes back to the front of the queue, to be recomputed from its tokens later.
"""
from __future__ import annotations

from collections import deque

from engine.block_manager import BlockManager
from engine.sequence import Sequence


class Scheduler:
    def __init__(self, blocks: BlockManager, max_running: int, step_tokens: int, chunk: int):
        self.blocks, self.max_running, self.step_tokens, self.chunk = blocks, max_running, step_tokens, chunk
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self.preemptions = 0
        self.prompt_tokens = self.cached_tokens = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _chunk_len(self, seq: Sequence) -> int:
        left = seq.num_tokens - seq.num_computed
        return min(left, self.chunk - seq.num_computed % self.chunk)

    def schedule(self) -> list[tuple[Sequence, int]]:
        """The next step: (sequence, number of its uncomputed tokens to feed), each with blocks for them."""
        budget, batch, prefilled = self.step_tokens, [], False
        for seq in list(self.running):
            if seq not in self.running:  # preempted below to make room for an earlier one
                continue
            n = self._chunk_len(seq)
            prefill = seq.num_tokens - seq.num_computed > 1
            if n > budget and (not prefill or prefilled):
                continue
            if not self._make_room(seq, seq.num_computed + n):
                continue  # seq itself was preempted
            batch.append((seq, n))
            budget -= n
            prefilled = prefilled or prefill
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting[0]
            if not self.blocks.can_allocate(seq.token_ids):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq)
            if not seq.admitted:
                seq.admitted, seq.cached_tokens = True, seq.num_cached_tokens
                self.prompt_tokens += seq.prompt_len
                self.cached_tokens += seq.num_cached_tokens
            self.running.append(seq)
            n = self._chunk_len(seq)
            if n <= budget or not prefilled:
                batch.append((seq, n))
                budget -= n
                prefilled = True
        return batch

    def _make_room(self, seq: Sequence, num_tokens: int) -> bool:
        """Blocks for seq's first num_tokens slots, preempting the latest admitted sequences as needed. False
        when seq itself had to go."""
        while not self.blocks.can_grow(seq, num_tokens):
            victim = self.running[-1]
            self.preempt(victim)
            if victim is seq:
                return False
        self.blocks.grow(seq, num_tokens)
        return True

    def preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free_seq(seq)
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def computed(self, batch: list[tuple[Sequence, int]]) -> None:
        """After a step: the fed tokens' K/V are in the pool (and their full blocks become shareable)."""
        for seq, n in batch:
            seq.num_computed += n
            self.blocks.commit(seq)

    def remove(self, seq: Sequence) -> None:
        """A finished or cancelled sequence: its blocks go back at once."""
        if seq in self.running:
            self.running.remove(seq)
            self.blocks.free_seq(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
