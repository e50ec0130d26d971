"""CUDA-graph decode: one captured decode step per batch-size bucket (and length regime), replayed over static
buffers. Two kinds: DecodeGraph, the contiguous rows' step (the row path: speculative and attention-backend
requests), and PagedDecodeGraph, the scheduler's decode rows over the paged pool (at the end of this file).

The step reads everything that changes between tokens from its static inputs on the device (DecodeInputs: the
token ids and positions, shared by a bucket's graphs of every length regime). Its first kernel turns them into
what the layers read (engine/kernels/decode_inputs.py: the embedding row, the rotary rows at the position, the
int32 cache slot and length); K/V are written at the position, and the attention kernel reads each row's length
on the device. Attention is captured over a length bound (a short one for single-pass attention, or the cache's
whole capacity), so one graph serves every position under it, and the cache stays ordinary memory that other
code (prefill, speculative verification) may write between replays. Replaying does no allocation and no host
sync. The step ends with the greedy pick (engine/kernels/argmax.py's argmax_step), which also advances the inputs
(token <- pick, position + 1) and records the pick at its position in the bucket's history: a greedy loop replays
back to back with nothing to upload between tokens, and reads many tokens with one copy (Runner.greedy_chunks).
"""
from __future__ import annotations

import torch

from engine import ops
from engine.cache import PagedStep
from engine.model import StepContext


class DecodeInputs:
    """A batch bucket's step inputs on the device, shared by its graphs of every length regime, so a loop moves
    from one regime's graph to the next with nothing uploaded."""

    def __init__(self, batch: int, max_seq_len: int, device: torch.device):
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(batch, dtype=torch.long, device=device)
        self.history = torch.zeros(batch, max_seq_len, dtype=torch.long, device=device)  # [b, p]: pick at p
        self.holds: tuple[int, int] | None = None  # (token, position) row 0's inputs hold now, when known


class DecodeGraph:
    """A decode step for `batch` cache rows (rows 0..batch-1), captured on first use. `max_len` (default: the
    cache's capacity) bounds the rows' lengths: it picks the attention kernel's regime, and the runner replays a
    graph only for rows within its bound."""

    def __init__(self, runner, batch: int, max_len: int | None = None, inputs: DecodeInputs | None = None):
        self.runner, self.batch = runner, batch
        self.max_len = max_len or runner.cache.max_seq_len
        dev, cfg = runner.device, runner.model.cfg
        self.inputs = inputs or DecodeInputs(batch, runner.cache.max_seq_len, dev)
        self.tokens, self.pos = self.inputs.tokens, self.inputs.pos
        d = runner.cos.shape[1]
        # what the input kernel writes each step: embeddings, rotary rows, cache slots and lengths
        self._step_in = (torch.empty(batch, cfg.hidden_size, dtype=runner.model.embed.dtype, device=dev),
                         torch.empty(batch, d, dtype=runner.cos.dtype, device=dev),
                         torch.empty(batch, d, dtype=runner.sin.dtype, device=dev),
                         torch.empty(batch, dtype=torch.int32, device=dev),
                         torch.empty(batch, dtype=torch.int32, device=dev))
        self._rows = torch.arange(batch, dtype=torch.int32, device=dev)  # cache row of each batch row
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # float32 [batch, V], written by each replay
        self.next: torch.Tensor | None = None  # int64 [batch]: greedy argmax of `logits`

    @property
    def holds(self) -> tuple[int, int] | None:
        return self.inputs.holds

    @holds.setter
    def holds(self, value: tuple[int, int] | None) -> None:
        self.inputs.holds = value

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        r, m = self.runner, self.runner.model
        x, cos, sin, slots, lengths = ops.decode_inputs(self.tokens, self.pos, m.embed, r.cos, r.sin,
                                                        m.cfg.scale_emb, self._step_in)
        # a graph-safe attention backend (InfLLM v2 decode) runs inside the graph; others never get here
        ctx = StepContext(rows=slice(0, self.batch), pos=self.pos, kv_len=self.max_len, cos=cos[:, None],
                          sin=sin[:, None], attn=r.attn, lengths=lengths, _slots=(self._rows, slots))
        h = m.layers(x[:, None], ctx, r.cache)
        # the pick; the inputs advance (the next replay feeds it at the next position) and it enters the history
        nxt, logits = ops.argmax_step(m.head_out(h)[:, 0], self.tokens, self.pos, self.inputs.history)
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


def capture_graph(step, reset=None) -> tuple[torch.cuda.CUDAGraph, object]:
    """Warm `step` up twice on a side stream (Triton compiles and autotunes, int4 weights are repacked; `reset`,
    if given, runs after each warm-up: a step that advances its own inputs is put back), then capture it;
    returns (graph, the captured step's outputs)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
            if reset is not None:
                reset()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = step()
    return graph, out


class PagedDecodeGraph:
    """A scheduled decode step for up to `batch` rows over the paged pool, captured on first use. Its static
    input is one int64 buffer, a row per batch row: token, position, pool slot, length, then the block table (as
    wide as the longest sequence the engine allows); `run` uploads a step's values with one copy from pinned
    memory and replays, and the graph itself casts the lengths and tables for the kernels. A bucket's spare rows
    get length 0 (the kernel writes zeros for them) and write their K/V into the pool's trash slot, so they touch
    no sequence's blocks. The step is the eager paged step itself (Runner.run_paged's model call with T = 1), so
    replay == eager by construction.

    The step ends with the greedy pick (`next`) and advances its own input in place (token <- pick, position,
    slot and length to the next slot, through the row's block table): `run_greedy` replays n steps back to back
    and reads the n picks with one copy, so a greedy batch decodes n tokens per host round trip, as the row
    path's greedy_chunks does for one sequence. `run` re-uploads the whole input, so the advance never leaks."""

    def __init__(self, runner, pool, batch: int):
        self.runner, self.pool, self.batch = runner, pool, batch
        self.width = -(-len(runner.cos) // pool.block_size)  # blocks of the longest sequence
        self.inputs = torch.zeros(batch, 4 + self.width, dtype=torch.long, device=runner.device)
        self._host = torch.zeros(batch, 4 + self.width, dtype=torch.long, pin_memory=runner.device.type == "cuda")
        self._uploaded: torch.cuda.Event | None = None  # the last upload from _host (refilled only after it)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # float32 [batch, V], written by each replay
        self.next: torch.Tensor | None = None  # int64 [batch]: greedy argmax of `logits`

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        r, inp, bs = self.runner, self.inputs, self.pool.block_size
        pos = inp[:, 1].contiguous()
        step = PagedStep(tables=inp[:, 4:].to(torch.int32).contiguous(), starts=pos, token_pos=pos,
                         token_seq=torch.arange(self.batch, device=inp.device), slot_mapping=inp[:, 2],
                         block_size=self.pool.block_size, pad_slot=self.pool.pad_slot, max_len=len(r.cos),
                         lengths=inp[:, 3].to(torch.int32).contiguous())
        ctx = r.context(kv_len=self.width * bs, cos=r.cos[pos][:, None], sin=r.sin[pos][:, None], paged=step)
        logits = r.model(inp[:, :1], ctx, self.pool)
        nxt = ops.argmax(logits)
        # advance the live rows (length > 0) to their next slot; spare rows stay inert
        live = inp[:, 3] > 0
        new = (pos + 1).clamp(max=len(r.cos) - 1)
        block = inp[:, 4:].gather(1, (new // bs).clamp(max=self.width - 1)[:, None])[:, 0]
        inp[:, 0] = torch.where(live, nxt, inp[:, 0])
        inp[:, 2] = torch.where(live, block * bs + new % bs, inp[:, 2])
        inp[:, 1] += live.long()
        inp[:, 3] += live.long()
        return logits, nxt

    def _replay(self) -> None:
        """One step: the captured graph on CUDA (captured on first use, the input put back after each warm-up
        so the warm-ups write the real step's K/V and nothing past it); eagerly elsewhere (tests)."""
        if self.inputs.device.type != "cuda":
            self.logits, self.next = self._step()
            return
        if self.graph is None:
            saved = self.inputs.clone()
            self.graph, (self.logits, self.next) = capture_graph(self._step, lambda: self.inputs.copy_(saved))
            self.inputs.copy_(saved)  # capturing does not run the step: the replay below does
        self.graph.replay()

    def _upload(self, tables: list[list[int]], positions: list[int], tokens: list[int]) -> None:
        if self._uploaded is not None:
            self._uploaded.synchronize()
        self._host.copy_(self.input_rows(tables, positions, tokens))
        self.inputs.copy_(self._host, non_blocking=True)
        if self.inputs.device.type == "cuda":
            self._uploaded = torch.cuda.Event()
            self._uploaded.record()

    def run(self, tables: list[list[int]], positions: list[int], tokens: list[int]) -> torch.Tensor:
        """Feed tokens[b] at positions[b] of the sequence with block table tables[b] (B <= batch rows) ->
        float32 logits [B, V] (a copy: the next replay overwrites the graph's own)."""
        self._upload(tables, positions, tokens)
        self._replay()
        return self.logits[:len(tokens)].clone()

    def run_greedy(self, tables: list[list[int]], positions: list[int], tokens: list[int], n: int
                   ) -> list[list[int]]:
        """n greedy steps back to back from tokens[b] at positions[b]: picks [n][B], read with one copy. Every
        row's table must already hold blocks for positions[b] + n slots (their K/V are written there)."""
        self._upload(tables, positions, tokens)
        picks = torch.empty(n, self.batch, dtype=torch.long, device=self.inputs.device)
        for i in range(n):
            self._replay()
            picks[i].copy_(self.next)
        return picks[:, :len(tokens)].tolist()

    def input_rows(self, tables: list[list[int]], positions: list[int], tokens: list[int]) -> torch.Tensor:
        """The static input's values for a step (int64 [batch, 4 + width], on the host), spare rows included."""
        bs = self.pool.block_size
        rows = [[t, p, table[p // bs] * bs + p % bs, p + 1] + table + [0] * (self.width - len(table))
                for table, p, t in zip(tables, positions, tokens)]
        trash = self.pool.trash_slot // bs  # spare rows: every slot they could touch is in the trash block
        rows += [[0, 0, self.pool.trash_slot, 0] + [trash] * self.width] * (self.batch - len(tokens))
        return torch.tensor(rows, dtype=torch.long)
