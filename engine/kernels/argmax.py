"""Greedy pick over a vocabulary in two small stages, beside torch.argmax (its reference).

torch.argmax over one 50-75K row runs in a single block (13 us on an H200 for 49152 logits, 2% of a small
model's decode step). Stage 1 spreads the row over many programs, each writing its block's max and first
index; stage 2 reduces those in one program. Ties go to the lowest index, as torch.argmax.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _block_max(x_ptr, val_ptr, idx_ptr, n, sx, NB: tl.constexpr, BLOCK: tl.constexpr):
    r, blk = tl.program_id(0), tl.program_id(1)
    cols = blk * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + r * sx + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
    i = tl.argmax(x, axis=0, tie_break_left=True)
    tl.store(val_ptr + r * NB + blk, tl.max(x, axis=0))
    tl.store(idx_ptr + r * NB + blk, blk * BLOCK + i)


@triton.jit
def _final(val_ptr, idx_ptr, out_ptr, NB: tl.constexpr, NBP: tl.constexpr):
    r = tl.program_id(0)
    rb = tl.arange(0, NBP)
    v = tl.load(val_ptr + r * NB + rb, mask=rb < NB, other=float("-inf"))
    j = tl.argmax(v, axis=0, tie_break_left=True)  # first block holding the max holds its first index
    tl.store(out_ptr + r, tl.load(idx_ptr + r * NB + j).to(tl.int64))


def argmax(x: torch.Tensor) -> torch.Tensor:
    """x [B, V] (last dim contiguous) -> int64 [B], the index of each row's max (first on ties)."""
    b, n = x.shape
    assert x.stride(1) == 1
    nb = triton.cdiv(n, BLOCK)
    val = torch.empty(b, nb, dtype=torch.float32, device=x.device)
    idx = torch.empty(b, nb, dtype=torch.int32, device=x.device)
    out = torch.empty(b, dtype=torch.int64, device=x.device)
    _block_max[(b, nb)](x, val, idx, n, x.stride(0), NB=nb, BLOCK=BLOCK, num_warps=4)
    _final[(b,)](val, idx, out, NB=nb, NBP=triton.next_power_of_2(nb), num_warps=1)
    return out
