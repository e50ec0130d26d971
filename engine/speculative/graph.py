"""CUDA-graph tree verification: one captured target pass per tree-size bucket, replayed over static buffers.

A verification pass launches every kernel of every layer for a handful of tokens; on a small model that is
all launch overhead, which plain decode already hides with its own CUDA graph (engine/cuda_graph.py), so an
eager verifier would lose to it. Here the pass is captured once per bucket of T = root + nodes (padded).
Everything that changes between steps reaches the device in one small copy (committed length, depths, each
node's ancestor bits, the root; draft tokens are copied device to device), and the graph derives the rest:
token ids, rotary positions (cos/sin rows gathered inside the graph), cache slots, the attention mask over the
cache's whole capacity (committed prefix + tree ancestry) and the attended length (which a tree-attention
kernel reads to stop at the tree's end), so one graph serves every position.
Padding rows write K/V past the tree and attend to the prefix and themselves; their outputs are ignored and
their slots are overwritten by later steps.
"""
from __future__ import annotations

import bisect
import os
import weakref
from contextlib import contextmanager

import torch

from engine.model import StepContext
from engine.quant import Int4Weight

BUCKETS = (2, 4, 8, 16, 32, 64)  # root + nodes, padded up to one of these (at most 64: ancestor bits)

# Weights the captured verify pass multiplies with. "int4": the engine's own (the int4 kernels, as decode).
# "dense": a bf16 copy of every int4 projection, dequantized once, so the T-row GEMMs go to cuBLAS: on a small
# target the int4 kernel for 2 <= M < 256 rows costs several times the M = 1 GEMV (frspec.md §8), while a dense
# GEMM of a 135M model reads only ~0.2 GB. Costs that memory; the decode graphs keep int4 either way.
VERIFY_WEIGHTS = os.environ.get("CPM_SPEC_VERIFY_WEIGHTS", "int4")
_DENSE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # engine -> {id(Linear): dense weight}


@contextmanager
def _verify_weights(engine):
    """While capturing: with VERIFY_WEIGHTS = "dense", every plain int4 projection of the target runs from its
    dense copy (Linear.dense, which Linear.__call__ prefers); restored afterwards, so only the captured verify
    graphs hold the copies."""
    lins = [lin for b in engine.model.blocks for lin in b.linears()
            if VERIFY_WEIGHTS == "dense" and lin.dense is None and lin.fast is None and lin.parts is None
            and isinstance(lin.weight, Int4Weight)]
    dense = _DENSE.setdefault(engine, {})
    for lin in lins:
        if id(lin) not in dense:
            from engine.model import _dense

            dense[id(lin)] = _dense(lin.weight, engine.dtype).contiguous()
        lin.dense = dense[id(lin)]
    try:
        yield
    finally:
        for lin in lins:
            lin.dense = None


class VerifyGraph:
    def __init__(self, engine, T: int):
        self.engine, self.T = engine, T
        dev, S = engine.device, engine.cache.max_seq_len
        # what one step sends, in one host->device copy: committed length, each row's depth, each row's
        # ancestor-or-self bits over the tree's slots (T <= 64), the root token
        self.meta = torch.zeros(2 * T + 2, dtype=torch.long, device=dev)
        self.host = torch.zeros(2 * T + 2, dtype=torch.long, pin_memory=dev.type == "cuda")
        self.draft = torch.zeros(T - 1, dtype=torch.long, device=dev)  # draft tokens (copied device to device)
        self.rows = torch.zeros(T, dtype=torch.int32, device=dev)  # cache row 0
        self.iota, self.cap = torch.arange(T, device=dev), torch.arange(S, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.hidden: torch.Tensor | None = None  # [T, H], written by each replay
        self.logits: torch.Tensor | None = None  # float32 [T, V]
        self.argmax: torch.Tensor | None = None  # int64 [T]: each row's greedy pick, computed inside the graph

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """The pass's inputs derived on the device from `meta` and `draft` (inside the graph): tokens [1, T],
        rotary positions [T], cache slots int32 [T], the mask bool [T, S] over the cache's capacity (the
        committed prefix, then each row's ancestors and itself), the attended length int32 [1]."""
        T = self.T
        committed, depth, bits, root = self.meta[0], self.meta[1:T + 1], self.meta[T + 1:2 * T + 1], self.meta[-1:]
        tokens = torch.cat([root, self.draft])[None]
        slots = (committed + self.iota).to(torch.int32)
        rel = self.cap - committed  # each cache slot relative to the root's
        in_tree = ((bits[:, None] >> rel.clamp(0, 63)[None, :]) & 1).bool() & (rel >= 0)[None, :] & (rel < T)[None, :]
        mask = (rel < 0)[None, :] | in_tree
        return tokens, committed + depth, slots, mask, (committed + T).to(torch.int32).view(1)

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        e, r = self.engine, self.engine.runner
        tokens, pos, slots, mask, lengths = self.inputs()
        ctx = StepContext(start=0, kv_len=e.cache.max_seq_len, mask=mask[None, None], cos=r.cos[pos][None],
                          sin=r.sin[pos][None], lengths=lengths,
                          _slots=(self.rows, slots))  # writes K/V at `slots` (CUDA path)
        h = e.model.hidden(tokens, ctx, e.cache, last_only=False)[0]
        logits = e.model.logits(h)
        return h, logits, logits.argmax(-1)

    def load(self, root: int, draft: torch.Tensor, parents: list[int], committed: int) -> None:
        """Fill the static inputs for root + n draft nodes (n + 1 <= T): draft int64 [n] (any device), parents
        as in Draft (-1 = child of the root), the root at cache slot `committed`. Padding rows sit at depth 0
        and see the prefix and themselves."""
        n1, T = len(parents) + 1, self.T
        depth, bits = [0], [1]
        for i, p in enumerate(parents):
            depth.append(depth[p + 1] + 1)
            bits.append(bits[p + 1] | 1 << (i + 1))
        depth += [0] * (T - n1)
        bits += [1 << i for i in range(n1, T)]
        bits = [b - (1 << 64) if b >= 1 << 63 else b for b in bits]  # bit 63 is int64's sign bit
        self.host.copy_(torch.tensor([committed] + depth + bits + [root], dtype=torch.long))
        self.meta.copy_(self.host, non_blocking=True)
        if n1 > 1:
            self.draft[:n1 - 1].copy_(draft, non_blocking=True)

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay (capturing on first use, after warm-up passes over the same inputs) -> (hidden, logits)."""
        if self.graph is None:
            with _verify_weights(self.engine):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):  # Triton compiles/autotunes for this T outside the capture
                        self._step()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                    self.hidden, self.logits, self.argmax = self._step()
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
        g.load(0, torch.zeros(T - 1, dtype=torch.long), list(range(-1, T - 2)), 0)  # a chain
        g.run()
    return len(engine.spec_graphs)
