"""Greedy pick over a vocabulary in two small stages, beside torch.argmax (its reference).

torch.argmax over one 50-75K row runs in a single block (13 us on an H200 for 49152 logits, 2% of a small
model's decode step). Stage 1 spreads the row over many programs, each writing its block's max and first
index; stage 2 reduces those in one program. Ties go to the lowest index, as torch.argmax.

`argmax_step` is the end of a CUDA-graph decode step in the same two launches: stage 1 also writes the float32
copy of bf16 logits (instead of a separate cast), and stage 2 also advances the step's inputs (token <- pick,
position + 1) and records the pick in a per-position history, so a host loop can replay several steps and
read their tokens with one copy. Both stages take part in programmatic dependent launch (engine/kernels/pdl.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl

BLOCK = 2048


@triton.jit
def _block_max(x_ptr, f_ptr, val_ptr, idx_ptr, n, sx, sf, NB: tl.constexpr, BLOCK: tl.constexpr,
               CAST: tl.constexpr, PDL: tl.constexpr):
    r, blk = tl.program_id(0), tl.program_id(1)
    cols = blk * BLOCK + tl.arange(0, BLOCK)
    pdl.launch_dependents(PDL)  # stage 2 is one program a row: it may wait on an SM from the start
    pdl.wait(PDL)  # x is the head's output
    x = tl.load(x_ptr + r * sx + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
    if CAST:  # the float32 logits the caller keeps, written while they pass through
        tl.store(f_ptr + r * sf + cols, x, mask=cols < n)
    i = tl.argmax(x, axis=0, tie_break_left=True)
    tl.store(val_ptr + r * NB + blk, tl.max(x, axis=0))
    tl.store(idx_ptr + r * NB + blk, blk * BLOCK + i)


@triton.jit
def _final(val_ptr, idx_ptr, out_ptr, tok_ptr, pos_ptr, hist_ptr, hist_len, NB: tl.constexpr, NBP: tl.constexpr,
           ADVANCE: tl.constexpr, HISTORY: tl.constexpr, PDL: tl.constexpr):
    r = tl.program_id(0)
    rb = tl.arange(0, NBP)
    pdl.launch_dependents(PDL)
    pdl.wait(PDL)
    v = tl.load(val_ptr + r * NB + rb, mask=rb < NB, other=float("-inf"))
    j = tl.argmax(v, axis=0, tie_break_left=True)  # first block holding the max holds its first index
    best = tl.load(idx_ptr + r * NB + j).to(tl.int64)
    tl.store(out_ptr + r, best)
    if ADVANCE:  # the next step feeds this pick at the next position
        p = tl.load(pos_ptr + r) + 1
        tl.store(tok_ptr + r, best)
        tl.store(pos_ptr + r, p)
        if HISTORY:  # the pick is the token at position p
            tl.store(hist_ptr + r * hist_len + p, best, mask=p < hist_len)


def _stages(x: torch.Tensor, f32: torch.Tensor | None, tokens, pos, history) -> torch.Tensor:
    b, n = x.shape
    assert x.stride(1) == 1
    nb = triton.cdiv(n, BLOCK)
    val = torch.empty(b, nb, dtype=torch.float32, device=x.device)
    idx = torch.empty(b, nb, dtype=torch.int32, device=x.device)
    out = torch.empty(b, dtype=torch.int64, device=x.device)
    on = pdl.enabled(x.device)
    cast = f32 is not None
    _block_max[(b, nb)](x, f32 if cast else x, val, idx, n, x.stride(0), f32.stride(0) if cast else 0, NB=nb,
                        BLOCK=BLOCK, CAST=cast, PDL=on, num_warps=4, **pdl.launch_kwargs(on))
    advance, hist = tokens is not None, history is not None
    _final[(b,)](val, idx, out, tokens if advance else out, pos if advance else out, history if hist else out,
                 history.shape[1] if hist else 0, NB=nb, NBP=triton.next_power_of_2(nb), ADVANCE=advance,
                 HISTORY=hist, PDL=on, num_warps=1, **pdl.launch_kwargs(on))
    return out


def argmax(x: torch.Tensor) -> torch.Tensor:
    """x [B, V] (last dim contiguous) -> int64 [B], the index of each row's max (first on ties)."""
    return _stages(x, None, None, None, None)


def argmax_step(x: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor, history: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A decode step's greedy end. x [B, V] logits in any float dtype (last dim contiguous); tokens int64 [B, 1]
    and pos int64 [B] (contiguous): the step's inputs, advanced in place to (pick, pos + 1); history int64
    [B, L] or None: history[b, pos + 1] = pick (where pos + 1 < L). -> (picks int64 [B], float32 logits [B, V]:
    x itself when already float32, else a float32 copy written by stage 1)."""
    assert tokens.is_contiguous() and pos.is_contiguous() and tokens.numel() == pos.numel() == x.shape[0]
    assert history is None or (history.is_contiguous() and history.shape[0] == x.shape[0])
    f32 = None if x.dtype == torch.float32 else torch.empty(x.shape, dtype=torch.float32, device=x.device)
    out = _stages(x, f32, tokens, pos, history)
    return out, x if f32 is None else f32
