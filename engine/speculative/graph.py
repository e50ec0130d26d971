"""CUDA-graph tree verification: one captured target pass per tree-size bucket, replayed over static buffers.

A verification pass launches every kernel of every layer for a handful of tokens; on a small model that is
all launch overhead, which plain decode already hides with its own CUDA graph (engine/cuda_graph.py), so an
eager verifier would lose to it. Here the pass is captured once per bucket of T = root + nodes (padded).
Everything that changes between steps lives in static buffers that the graph reads on the device: token ids,
rotary positions (cos/sin rows are gathered inside the graph), cache slots, and the attention mask over the
cache's whole capacity (committed prefix + tree ancestry), so one graph serves every position.
Padding rows write K/V past the tree and attend to the prefix and themselves; their outputs are ignored and
their slots are overwritten by later steps.
"""
from __future__ import annotations

import bisect

import torch

from engine.model import StepContext

BUCKETS = (2, 4, 8, 16, 32, 64)  # root + nodes, padded up to one of these


class VerifyGraph:
    def __init__(self, engine, T: int):
        self.engine, self.T = engine, T
        dev, S = engine.device, engine.cache.max_seq_len
        self.tokens = torch.zeros(1, T, dtype=torch.long, device=dev)
        self.pos = torch.zeros(T, dtype=torch.long, device=dev)
        self.rows = torch.zeros(T, dtype=torch.int32, device=dev)  # cache row 0
        self.slots = torch.zeros(T, dtype=torch.int32, device=dev)
        self.mask = torch.zeros(1, 1, T, S, dtype=torch.bool, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.hidden: torch.Tensor | None = None  # [T, H], written by each replay
        self.logits: torch.Tensor | None = None  # float32 [T, V]

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.engine
        r = e.runner
        ctx = StepContext(slice(0, 1), 0, None, e.cache.max_seq_len, self.mask, False, r.cos[self.pos][None],
                          r.sin[self.pos][None], None, None, (self.rows, self.slots))
        h = e.model.hidden(self.tokens, ctx, e.cache, last_only=False)[0]
        return h, e.model.logits(h)

    def load(self, tokens: torch.Tensor, depth: torch.Tensor, anc: torch.Tensor, committed: int) -> None:
        """Fill the static inputs for root + n nodes (n + 1 <= T). tokens/depth int64 [n + 1] (root first,
        depth 0), anc bool [n + 1, n + 1] ancestor-or-self."""
        n1, T = len(tokens), self.T
        pad = T - n1
        tok = torch.cat([tokens.cpu(), torch.zeros(pad, dtype=torch.long)])
        pos = torch.cat([depth.cpu(), torch.zeros(pad, dtype=torch.long)]) + committed
        mask = torch.zeros(T, self.mask.shape[-1], dtype=torch.bool)
        mask[:, :committed] = True
        mask[:n1, committed:committed + n1] = anc
        mask[n1:, committed + n1:committed + T] = torch.eye(pad, dtype=torch.bool)  # padding sees itself
        self.tokens.copy_(tok[None])
        self.pos.copy_(pos)
        self.slots.copy_(torch.arange(committed, committed + T, dtype=torch.int32))
        self.mask.copy_(mask[None, None])

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay (capturing on first use, after warm-up passes over the same inputs) -> (hidden, logits)."""
        if self.graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # Triton compiles/autotunes for this T outside the capture
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.hidden, self.logits = self._step()
            self.graph = graph
        self.graph.replay()
        return self.hidden, self.logits


def graph_for(engine, n1: int, committed: int) -> VerifyGraph | None:
    """The bucket's graph for root + n nodes at this position, or None where graphs do not apply (CPU, kernels
    off, an attention backend set, a tree too big, or padding that would run past the cache)."""
    if not engine.runner.graphs_on():
        return None
    i = bisect.bisect_left(BUCKETS, n1)
    if i == len(BUCKETS) or committed + BUCKETS[i] > engine.cache.max_seq_len:
        return None
    T = BUCKETS[i]
    if T not in engine.spec_graphs:
        engine.spec_graphs[T] = VerifyGraph(engine, T)
    return engine.spec_graphs[T]


def capture_all(engine) -> int:
    """Capture every bucket now (Triton autotuning and capture take a moment each), writing only scratch K/V
    at the cache's start: call between requests. Returns how many graphs exist."""
    for T in BUCKETS:
        g = graph_for(engine, T, 0)
        if g is None:
            break
        g.load(torch.zeros(T, dtype=torch.long), torch.arange(T), torch.ones(T, T, dtype=torch.bool).tril(), 0)
        g.run()
    return len(engine.spec_graphs)
