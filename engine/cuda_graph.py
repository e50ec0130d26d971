"""CUDA-graph decode: one captured decode step per batch-size bucket (and length regime), replayed over static
buffers.

The step reads everything that changes between tokens from its static inputs on the device: the token ids, the
positions (rotary rows are gathered from them inside the graph, K/V are written at them, and the attention
kernel reads each row's length as position + 1). Attention is captured over a length bound (a short one for
single-pass attention, or the cache's whole capacity), so one graph serves every position under it, and the
cache stays ordinary memory that other code (prefill, speculative verification) may write between replays.
Replaying does no allocation and no host sync; the caller's one sync is reading the chosen token. The step ends
by advancing its own inputs (token <- its greedy pick, position + 1), so a greedy loop replays back to back with
nothing to upload between tokens.
"""
from __future__ import annotations

import torch

from engine import ops
from engine.model import StepContext


class DecodeGraph:
    """A decode step for `batch` cache rows (rows 0..batch-1), captured on first use. `max_len` (default: the
    cache's capacity) bounds the rows' lengths: it picks the attention kernel's regime, and the runner replays a
    graph only for rows within its bound."""

    def __init__(self, runner, batch: int, max_len: int | None = None):
        self.runner, self.batch = runner, batch
        self.max_len = max_len or runner.cache.max_seq_len
        dev = runner.device
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(batch, dtype=torch.long, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # float32 [batch, V], written by each replay
        self.next: torch.Tensor | None = None  # int64 [batch]: greedy argmax of `logits`
        self.holds: tuple[int, int] | None = None  # (token, position) row 0's inputs hold now, when known

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.runner
        # a graph-safe attention backend (InfLLM v2 decode) runs inside the graph; others never get here
        ctx = StepContext(slice(0, self.batch), None, self.pos, self.max_len, None, False,
                          r.cos[self.pos][:, None], r.sin[self.pos][:, None], r.attn, (self.pos + 1).to(torch.int32))
        logits = r.model(self.tokens, ctx, r.cache)
        nxt = ops.argmax(logits)
        self.tokens.copy_(nxt[:, None])  # advance: the next replay feeds the pick at the next position
        self.pos.add_(1)
        return logits, nxt

    def capture(self) -> None:
        """Warm up (Triton compiles and autotunes, int4 weights are repacked) then capture. The inputs must
        already hold the real step's values: the first warm-up run writes the same K/V the replay will write
        (the second writes one slot further, which the next step overwrites before anything reads it); the
        inputs are put back before capture."""
        saved = self.tokens.clone(), self.pos.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.tokens.copy_(saved[0])
        self.pos.copy_(saved[1])
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.logits, self.next = self._step()
        self.graph = graph

    def replay(self) -> None:
        """One step; afterwards the inputs hold every row's (pick, position + 1)."""
        if self.graph is None:
            self.capture()
        self.graph.replay()
        self.holds = None


def buckets(max_batch: int) -> list[int]:
    """Batch sizes that get their own graph: powers of two below max_batch, then max_batch itself."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]
