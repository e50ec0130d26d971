"""Prefill (chunked) and decode steps: builds each step's StepContext and calls the model.

Two caches: the paged pool (run_scheduled / run_paged: the scheduler's steps, many sequences through their block
tables, on CPU and CUDA) and the contiguous rows (prefill / decode_one / decode_batch / greedy_chunks: speculative
verification and attention backends, which read rows; docs/decisions.md says why).

On CUDA (with the Triton kernels on) a scheduled step's decode rows replay a captured CUDA graph per batch-size
bucket with the block tables, positions and slot mapping as its static inputs (engine/cuda_graph.PagedDecodeGraph);
the row path's decode replays a graph per batch bucket and, for one sequence, length regime (DecodeGraph), with
no attention backend set or a graph-safe one; elsewhere decode runs eagerly. The eager decode step for one sequence
does no allocation beyond the op outputs: rotary rows are views of the precomputed tables and the KV cache is
written in place.
"""
from __future__ import annotations

import bisect
from typing import Iterator

import torch

from engine import ops
from engine.cache import KVCache, PagedKVCache, PagedStep
from engine.cpu_q4 import DENSE_FROM_ROWS
from engine.cuda_graph import DecodeGraph, DecodeInputs, PagedDecodeGraph, buckets
from engine.model import StepContext, Transformer

PREFILL_CHUNK = 512  # bounds prefill attention memory at chunk x context, independent of prompt length
# single-sequence decode graphs come in two length regimes: up to this length (the fused attention kernel's
# single-pass bound, rope_decode_attention.SINGLE_MAX) and up to the cache's capacity (split + merge)
SHORT_GRAPH_LEN = 384
GREEDY_CHUNK = 8  # greedy tokens read back with one copy (Runner.greedy_chunks): ~4 ms of a small model's decode


class Runner:
    def __init__(self, model: Transformer, cache, cos: torch.Tensor, sin: torch.Tensor, max_running: int = 16,
                 block_size: int = 64):
        # cache: the KVCache rows, or a function that makes them on first use (on CPU only speculative requests
        # read rows, so a plain CPU engine never allocates them)
        self._cache = cache
        self.model, self.cos, self.sin = model, cos, sin  # cos/sin: [max_seq_len, D]
        self.device = cos.device
        self._tok = torch.zeros(1, 1, dtype=torch.long, device=self.device)  # reused decode input
        self.attn = None  # optional attention backend put into every StepContext (see model.StepContext.attn)
        self.use_graphs = True  # CUDA graphs for decode where possible (benchmarks turn it off to compare)
        self.short_len = SHORT_GRAPH_LEN
        self._graphs: dict[tuple[int, int], DecodeGraph] = {}  # (batch bucket, length bound) -> graph
        self._inputs: dict[int, DecodeInputs] = {}  # batch bucket -> the device inputs its graphs share
        self.block_size = block_size  # the paged pool's (its decode kernel's shape check)
        self.paged_buckets = buckets(max_running)  # scheduled decode rows: one graph per bucket
        self.paged_graphs: dict[int, PagedDecodeGraph] = {}
        # greedy decode steps a scheduled all-greedy batch runs back to back (None: GREEDY_CHUNK where the paged
        # graphs are on, else 1; tests set it to run the path eagerly on CPU)
        self.paged_greedy_steps: int | None = None

    @property
    def cache(self) -> KVCache:
        if not isinstance(self._cache, KVCache):
            self._cache = self._cache()
        return self._cache

    @property
    def _buckets(self) -> list[int]:
        return buckets(self.cache.max_batch)

    def context(self, *, rows: slice = slice(0, 1), start: int | None = None, pos: torch.Tensor | None = None,
                kv_len: int, mask: torch.Tensor | None = None, causal: bool = False, cos: torch.Tensor,
                sin: torch.Tensor, lengths: torch.Tensor | None = None, paged: PagedStep | None = None
                ) -> StepContext:
        """The one way a step's StepContext is made (keywords only); the runner's attention backend goes in."""
        return StepContext(rows=rows, start=start, pos=pos, kv_len=kv_len, mask=mask, causal=causal, cos=cos, sin=sin,
                           attn=self.attn, lengths=lengths, paged=paged)

    def run_scheduled(self, pool: PagedKVCache, batch: list) -> list[tuple[object, torch.Tensor]]:
        """A scheduler step (engine/scheduler.py): [(sequence, n)] feeds each sequence's next n uncomputed tokens.
        The one-token rows (decoding sequences) go through the model together; each prompt chunk goes alone (its
        rows would pad the others). Returns (sequence, float32 logits [V]) for every sequence whose tokens are
        now all computed, i.e. that samples its next token."""
        out = []
        decode = [seq for seq, n in batch if n == 1 and seq.num_computed + 1 == seq.num_tokens]
        if decode:
            logits = self.decode_paged(pool, [s.block_table for s in decode], [s.num_computed for s in decode],
                                       [s.token_ids[s.num_computed] for s in decode])
            out += list(zip(decode, logits))
        for seq, n in batch:
            if n == 1 and seq in decode:
                continue
            start, end = seq.num_computed, seq.num_computed + n
            for s, e in self._pieces(start, end):
                last = e == seq.num_tokens
                logits = self.run_paged(pool, [seq.block_table], [s], [seq.token_ids[s:e]], last)
                if last:
                    out.append((seq, logits[0]))
        return out

    def _pieces(self, start: int, end: int) -> list[tuple[int, int]]:
        """A prompt chunk as model calls: whole, or, in the fast CPU mode when it is too short for the dense
        GEMM (cpu_q4.DENSE_FROM_ROWS) but longer than one C layer call, in C-layer-sized pieces (the PyTorch layer
        would run the same int16 GEMVs with ~60 small ops around them)."""
        step = self._c_tokens
        if step and step < end - start < DENSE_FROM_ROWS:
            return [(s, min(s + step, end)) for s in range(start, end, step)]
        return [(start, end)]

    @property
    def _c_tokens(self) -> int:
        steps = [b.cpu_step for b in self.model.blocks]
        return steps[0].MAX_TOKENS if steps and all(steps) else 0

    def decode_paged(self, pool: PagedKVCache, tables: list[list[int]], positions: list[int], tokens: list[int]
                     ) -> torch.Tensor:
        """One decode step over the paged pool: row b feeds tokens[b] at positions[b] of the sequence whose block
        table is tables[b] -> float32 logits [B, V]. Replays the batch bucket's CUDA graph where graphs are on
        (paged_graphs_on) and B fits the largest bucket; else one eager run_paged."""
        B = len(tokens)
        if not self.paged_graphs_on() or B > self.paged_buckets[-1]:
            return self.run_paged(pool, tables, positions, [[t] for t in tokens])
        b = self.paged_buckets[bisect.bisect_left(self.paged_buckets, B)]
        if b not in self.paged_graphs:
            self.paged_graphs[b] = PagedDecodeGraph(self, pool, b)
        return self.paged_graphs[b].run(tables, positions, tokens)

    def greedy_steps(self) -> int:
        """How many greedy steps decode_paged_greedy may run back to back (1: one at a time)."""
        if self.paged_greedy_steps is not None:
            return self.paged_greedy_steps
        return GREEDY_CHUNK if self.paged_graphs_on() else 1

    def decode_paged_greedy(self, pool: PagedKVCache, tables: list[list[int]], positions: list[int],
                            tokens: list[int], n: int) -> list[list[int]]:
        """n greedy decode steps back to back over the paged pool (the bucket's graph feeds each pick to the next
        step on the device) -> picks [n][B]. Every tables[b] must hold blocks for positions[b] + n slots."""
        b = self.paged_buckets[bisect.bisect_left(self.paged_buckets, len(tokens))]
        if b not in self.paged_graphs:
            self.paged_graphs[b] = PagedDecodeGraph(self, pool, b)
        return self.paged_graphs[b].run_greedy(tables, positions, tokens, n)

    def paged_graphs_on(self) -> bool:
        """Whether scheduled decode rows replay CUDA graphs: on CUDA, with the Triton kernels and graphs on and a
        head size the paged decode kernel takes (the gather path it falls back to reads lengths on the host)."""
        return self.use_graphs and self.device.type == "cuda" and ops.KERNELS \
            and ops.paged_decode_supported(self.model.cfg.head_dim, self.block_size)

    def run_paged(self, pool: PagedKVCache, tables: list[list[int]], starts: list[int], tokens: list[list[int]],
                  logits: bool = True) -> torch.Tensor | None:
        """One model call over the paged pool: row b feeds tokens[b] (all rows the same length T) at slots
        starts[b].. of the sequence whose block table is tables[b]. Returns float32 logits [B, V] of each row's
        last token, or None (logits=False: a prompt chunk that does not end its prompt)."""
        B, T, dev, bs = len(tokens), len(tokens[0]), self.device, pool.block_size
        width = max(len(t) for t in tables)
        tab = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32, device=dev)
        start = torch.tensor(starts, dtype=torch.long, device=dev)
        pos = (start[:, None] + torch.arange(T, device=dev)).reshape(-1)  # [B * T]
        seq = torch.arange(B, device=dev).repeat_interleave(T)
        slot = tab[seq, pos // bs].long() * bs + pos % bs
        lengths = (start + 1).to(torch.int32) if T == 1 else None  # a decode step: the paged decode kernel's input
        step = PagedStep(tables=tab, starts=start, token_pos=pos, token_seq=seq, slot_mapping=slot, block_size=bs,
                         pad_slot=pool.pad_slot, max_len=len(self.cos), lengths=lengths)
        D = self.cos.shape[-1]
        ctx = self.context(kv_len=max(starts) + T, cos=self.cos[pos].view(B, T, D),
                           sin=self.sin[pos].view(B, T, D), paged=step)
        ids = torch.tensor(tokens, dtype=torch.long, device=dev)
        if not logits:
            self.model.hidden(ids, ctx, pool)
            return None
        return self.model(ids, ctx, pool)

    def graphs_on(self) -> bool:
        """Whether CUDA graphs serve steps that know no attention backend (speculative verification builds its
        own StepContext): as decode_graphs_on, with no backend set."""
        return self.attn is None and self.decode_graphs_on()

    def decode_graphs_on(self) -> bool:
        """Whether decode replays CUDA graphs: as graphs_on, or with a backend that declares `graph_safe = True`
        (no host sync or step-dependent allocation): the decode graph captures it in its StepContext."""
        safe = self.attn is None or getattr(self.attn, "graph_safe", False)
        return self.use_graphs and self.device.type == "cuda" and ops.KERNELS and safe

    def _graph(self, batch: int, pos: int | None = None) -> DecodeGraph:
        """The graph for `batch` rows; with the (host-known) position of a single sequence, the one of its length
        regime (a bound on the length only picks kernels: any graph gives the same tokens). An attention backend
        always gets the capacity graph (its contract: kv_len = capacity, lengths on the device)."""
        b = self._buckets[bisect.bisect_left(self._buckets, batch)]
        cap = self.cache.max_seq_len
        short = pos is not None and self.attn is None and pos + 1 <= self.short_len < cap
        bound = self.short_len if short else cap
        if (b, bound) not in self._graphs:
            if b not in self._inputs:
                self._inputs[b] = DecodeInputs(b, cap, self.device)
            self._graphs[b, bound] = DecodeGraph(self, b, bound, self._inputs[b])
        return self._graphs[b, bound]

    def prefill(self, ids: list[int], row: int = 0) -> torch.Tensor:
        """Run the prompt through the model into cache row `row`; return float32 logits [1, V] of its last token."""
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, T]
        logits = None
        for s in range(0, len(ids), PREFILL_CHUNK):
            e = min(s + PREFILL_CHUNK, len(ids))
            mask = None
            if s > 0:  # later chunks see the whole earlier prompt plus a causal triangle over themselves
                q_pos = torch.arange(s, e, device=self.device)[:, None]
                mask = (torch.arange(e, device=self.device)[None, :] <= q_pos)[None, None]  # [1, 1, T, e]
            ctx = self.context(rows=slice(row, row + 1), start=s, kv_len=e, mask=mask, causal=True,
                               cos=self.cos[None, s:e], sin=self.sin[None, s:e])
            logits = self.model(tokens[:, s:e], ctx, self.cache)
        return logits

    def decode_one(self, token: int, pos: int, row: int = 0) -> torch.Tensor:
        """One token at position `pos` for one sequence -> float32 logits [1, V]."""
        if row == 0 and self.decode_graphs_on():
            return self._replay_one(token, pos).logits.clone()
        self._tok.fill_(token)
        ctx = self.context(rows=slice(row, row + 1), start=pos, kv_len=pos + 1, cos=self.cos[None, pos:pos + 1],
                           sin=self.sin[None, pos:pos + 1])
        return self.model(self._tok, ctx, self.cache)

    def decode_greedy(self, token: int, pos: int) -> int:
        """decode_one for row 0 followed by argmax, computed on the device: the one host sync is reading the id.
        For pure greedy decoding (no penalty, no logits processors)."""
        if self.decode_graphs_on():
            g = self._replay_one(token, pos)
            nxt = int(g.next[0])
            g.holds = (nxt, pos + 1)  # the graph advanced its own inputs: a greedy loop uploads nothing
            return nxt
        return int(self.decode_one(token, pos).argmax(-1)[0])

    def greedy_chunks(self, token: int, pos: int, count: int, chunk: int = GREEDY_CHUNK) -> Iterator[list[int]]:
        """Greedy tokens for positions pos + 1 .. pos + count of row 0, `token` being the one at `pos`, yielded
        in order a list at a time. With decode graphs, `chunk` steps are replayed back to back (each feeds its
        pick to the next) and their picks read with one copy from the inputs' history, while the next chunk
        already runs: the caller's per-token work (stop checks, detokenizing, streaming) overlaps the device
        instead of a sync a token. A caller that stops early leaves up to two chunks computed past its stop;
        their K/V lie past the sequence's end, where nothing reads (a new request is prefilled from position
        0 and attends to its own positions only). Without graphs: decode_greedy, one token a list."""
        if count <= 0:
            return
        if not self.decode_graphs_on():
            for p in range(pos, pos + count):
                token = self.decode_greedy(token, p)
                yield [token]
            return
        inputs = self._graph(1, pos).inputs  # bucket 1's, shared by both length regimes
        if inputs.holds != (token, pos):
            inputs.tokens.fill_(token)
            inputs.pos.fill_(pos)
        host = torch.empty(2, chunk, dtype=torch.long, pin_memory=True)  # one slot read while the other fills
        pending, p, end, slot = None, pos, pos + count, 0
        while p < end or pending is not None:
            launched = None
            if p < end:
                n = min(chunk, end - p)
                for i in range(n):
                    self._graph(1, p + i).replay()  # the graph of each step's length regime
                buf = host[slot, :n]
                buf.copy_(inputs.history[0, p + 1:p + 1 + n], non_blocking=True)
                done = torch.cuda.Event()
                done.record()
                launched, p, slot = (done, buf), p + n, 1 - slot
            if pending is not None:
                pending[0].synchronize()
                yield pending[1].tolist()
            pending = launched

    def _replay_one(self, token: int, pos: int) -> DecodeGraph:
        g = self._graph(1, pos)  # the first bucket is always 1
        if g.holds != (token, pos):
            g.tokens.fill_(token)
            g.pos.fill_(pos)
        g.replay()
        return g

    def decode_batch(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens int64 [B], pos int64 [B] (each row's own position) -> float32 logits [B, V]."""
        B = len(tokens)
        if self.decode_graphs_on():
            g = self._graph(B)
            g.tokens[:B, 0].copy_(tokens)
            g.pos[:B].copy_(pos)
            if g.batch > B:  # spare rows of the bucket write slot 0 of cache rows this batch does not use
                g.tokens[B:].zero_()
                g.pos[B:].zero_()
            g.replay()
            return g.logits[:B].clone()
        kv_len = int(pos.max()) + 1
        mask = (torch.arange(kv_len, device=self.device)[None, :] <= pos[:, None])[:, None, None]  # [B, 1, 1, L]
        ctx = self.context(rows=slice(0, B), pos=pos, kv_len=kv_len, mask=mask, cos=self.cos[pos][:, None],
                           sin=self.sin[pos][:, None], lengths=(pos + 1).to(torch.int32))
        return self.model(tokens[:, None], ctx, self.cache)
