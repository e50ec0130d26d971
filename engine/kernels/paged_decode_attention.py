"""Flash-decoding over the paged KV pool, beside its PyTorch reference `paged_decode_attention_ref`.

One query token per row. Each row reads its own sequence through its block table (engine/cache.PagedKVCache:
blocks [num_blocks, block_size, kv_heads, D], slot s of a sequence in block table[s // block_size] at offset
s % block_size). The grid is row x kv head x split, as in decode_attention.py: each program walks a share of
the row's blocks, one pool block at a time (one table read a block), loads it once for the G = Hq / Hkv query
heads that share it (GQA), keeps an online softmax and writes a partial with its log-sum-exp; decode_attention's
merge kernel combines the splits. The split count depends on the table's width (the engine's longest
sequence), not on the current lengths, and each split's share is computed on the device from the row's length,
so one CUDA graph serves every step; a row of length 0 (a graph bucket's padding row) writes an empty result.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from engine.kernels.decode_attention import (_merge_kernel, default_splits, online_softmax, pv_dot, qk_dot,
                                            softmax_result)


def paged_decode_attention_ref(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, tables: torch.Tensor,
                               lengths: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """q [B, Hq, D], pools [num_blocks, BS, Hkv, D], tables int32 [B, max_blocks], lengths int32 [B] (valid
    slots 0..len-1, >= 1) -> [B, Hq, D]."""
    b, hq, d = q.shape
    bs, hkv = k_pool.shape[1], k_pool.shape[2]
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    out = torch.empty_like(q)
    for i in range(b):
        n = int(lengths[i])
        blocks = tables[i, :-(-n // bs)].long()
        k = k_pool[blocks].reshape(-1, hkv, d)[:n].float().transpose(0, 1).repeat_interleave(hq // hkv, 0)
        v = v_pool[blocks].reshape(-1, hkv, d)[:n].float().transpose(0, 1).repeat_interleave(hq // hkv, 0)
        p = torch.softmax((q[i].float()[:, None, :] @ k.transpose(1, 2)) * scale, dim=-1)  # [Hq, 1, n]
        out[i] = (p @ v)[:, 0].to(q.dtype)
    return out


@triton.jit
def _paged_split_kernel(q_ptr, k_ptr, v_ptr, tab_ptr, len_ptr, o_ptr, lse_ptr, qk_scale,
                        sq_b, sq_h, sk_blk, sk_s, sk_h, sv_blk, sv_s, sv_h, st_b,
                        HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
                        NSPLIT: tl.constexpr, F32_DOT: tl.constexpr):
    bh, sp = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    length = tl.load(len_ptr + b)
    nblocks = tl.cdiv(length, BS)
    per_split = tl.cdiv(nblocks, NSPLIT)  # blocks a split walks: the row's length spread over the splits
    first = sp * per_split
    last = tl.minimum(first + per_split, nblocks)
    rg, rd, rs = tl.arange(0, GP), tl.arange(0, D), tl.arange(0, BS)
    q = tl.load(q_ptr + b * sq_b + (h * G + rg)[:, None] * sq_h + rd[None, :], mask=(rg < G)[:, None], other=0.0)
    if F32_DOT:  # Triton 3.9's interpreter computes bf16 tl.dot wrongly; fp32 engines want exact products
        q = q.to(tl.float32)
    m_i = tl.full((GP,), float("-inf"), tl.float32)
    l_i = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    for j in range(first, last):  # empty for a split past the row's end (and for a length-0 padding row)
        blk = tl.load(tab_ptr + b * st_b + j).to(tl.int64)
        smask = j * BS + rs < length
        k = tl.load(k_ptr + blk * sk_blk + rs[:, None] * sk_s + h * sk_h + rd[None, :], mask=smask[:, None],
                    other=0.0)
        v = tl.load(v_ptr + blk * sv_blk + rs[:, None] * sv_s + h * sv_h + rd[None, :], mask=smask[:, None],
                    other=0.0)
        qk = qk_dot(q, k, qk_scale, F32_DOT)  # [GP, BS], log2 units
        qk = tl.where(smask[None, :], qk, float("-inf"))
        p, alpha, m_i, l_i = online_softmax(qk, m_i, l_i)
        acc = acc * alpha[:, None] + pv_dot(p, v, F32_DOT)
    out, lse = softmax_result(acc, m_i, l_i)
    row = (b * HKV * G + h * G + rg) * NSPLIT + sp  # partials [B, Hq, NSPLIT, D]
    # a row with nothing visible (length 0) stores lse 0 and out 0 in split 0, so the merge stays finite
    empty = (length == 0) & (sp == 0)
    tl.store(o_ptr + row[:, None] * D + rd[None, :], out, mask=(rg < G)[:, None])
    tl.store(lse_ptr + row, tl.where(empty, 0.0, lse), mask=rg < G)


def supports(head_dim: int, block_size: int) -> bool:
    """Shapes the kernel takes: head size and block size powers of two (blocks of at least 16 slots)."""
    return head_dim & (head_dim - 1) == 0 and block_size & (block_size - 1) == 0 and block_size >= 16


def paged_splits(batch: int, kv_heads: int, max_blocks: int) -> int:
    """Splits (a power of 2, at most the table's width) so that rows x kv heads x splits covers the GPU."""
    return min(default_splits(batch, kv_heads, max_blocks, 1), triton.next_power_of_2(max_blocks))


def paged_decode_attention(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, tables: torch.Tensor,
                           lengths: torch.Tensor, scale: float | None = None, num_splits: int | None = None
                           ) -> torch.Tensor:
    """q [B, Hq, D] (last dim contiguous), pools [num_blocks, BS, Hkv, D] (last dim contiguous; BS and D powers
    of two), tables int32 [B, max_blocks], lengths int32 [B] -> [B, Hq, D] (a length-0 row gives zeros)."""
    b, hq, d = q.shape
    _, bs, hkv, _ = k_pool.shape
    assert k_pool.shape == v_pool.shape and k_pool.shape[3] == d and hq % hkv == 0
    assert q.stride(2) == 1 and k_pool.stride(3) == 1 and v_pool.stride(3) == 1
    assert d == triton.next_power_of_2(d) and bs == triton.next_power_of_2(bs) and bs >= 16
    assert tables.dtype == torch.int32 and tables.shape[0] == b and tables.stride(1) == 1
    assert lengths.dtype == torch.int32 and lengths.shape == (b,)
    nsplit = num_splits or paged_splits(b, hkv, tables.shape[1])
    assert nsplit == triton.next_power_of_2(nsplit), nsplit
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    part = torch.empty(b, hq, nsplit, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, hq, nsplit, dtype=torch.float32, device=q.device)
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    _paged_split_kernel[(b * hkv, nsplit)](q, k_pool, v_pool, tables, lengths, part, lse, scale * 1.4426950408889634,
                                           q.stride(0), q.stride(1), *k_pool.stride()[:3], *v_pool.stride()[:3],
                                           tables.stride(0), HKV=hkv, G=hq // hkv,
                                           GP=max(16, triton.next_power_of_2(hq // hkv)), D=d, BS=bs,
                                           NSPLIT=nsplit, F32_DOT=interp or q.dtype == torch.float32, num_warps=4)
    out = torch.empty_like(q)
    _merge_kernel[(b * hq,)](part, lse, out, out.stride(0), out.stride(1), HQ=hq, D=d, NSPLIT=nsplit)
    return out
