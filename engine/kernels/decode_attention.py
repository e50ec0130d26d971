"""Flash-decoding over a static KV cache, beside its PyTorch reference `decode_attention_ref`.

One query token per sequence. The sequence is split across programs (grid: batch x kv head x split) so
that even batch 1 with 2 KV heads fills the GPU; each program loads a K/V block once for all G = Hq / Hkv
query heads that share it (GQA), keeps an online softmax, and writes a partial output with its log-sum-exp;
a second small kernel merges the splits. The number of splits depends on the cache's capacity, not on the
current lengths, so one CUDA graph serves every step; each split's share of the sequence is computed on the device
from the length (a short sequence gets one block a split over several splits, not all of it in the first
split); programs past a sequence's length exit at once.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from engine.kernels import pdl


def decode_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
                         scale: float | None = None, num_splits: int | None = None) -> torch.Tensor:
    """q [B, Hq, D], caches [B, Hkv, S, D], lengths int [B] (valid positions 0..len-1) -> [B, Hq, D]."""
    b, hq, d = q.shape
    g = hq // k_cache.shape[1]
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    out = torch.empty_like(q)
    for i in range(b):
        n = int(lengths[i])
        k = k_cache[i, :, :n].float().repeat_interleave(g, 0)  # [Hq, n, D]
        v = v_cache[i, :, :n].float().repeat_interleave(g, 0)
        p = torch.softmax((q[i].float()[:, None, :] @ k.transpose(1, 2)) * scale, dim=-1)  # [Hq, 1, n]
        out[i] = (p @ v)[:, 0].to(q.dtype)
    return out


@triton.jit
def online_softmax(qk, m_i, l_i):
    """One block of scores qk [R, BS] (log2 units, -inf where masked) into a running softmax (max m_i, sum
    l_i [R]) -> (p [R, BS], alpha [R]: the factor the accumulator is rescaled by, new m_i, new l_i). A row with
    nothing visible yet keeps m = -inf and exponentiates against 0, so p and alpha stay 0 instead of NaN."""
    m_new = tl.maximum(m_i, tl.max(qk, axis=1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(qk - m_use[:, None])
    alpha = tl.exp2(m_i - m_use)
    return p, alpha, m_new, l_i * alpha + tl.sum(p, axis=1)


@triton.jit
def qk_dot(q, k, qk_scale, F32_DOT: tl.constexpr):
    """Scores q [R, D] . k [BS, D] -> [R, BS] in log2 units (qk_scale folds in log2 e): exact fp32 products, not
    TF32, for fp32 inputs (the engine's fp32 mode must match its CPU path), else k in q's dtype on tensor cores."""
    if F32_DOT:
        return tl.dot(q, tl.trans(k.to(q.dtype)), input_precision="ieee") * qk_scale
    return tl.dot(q, tl.trans(k.to(q.dtype))) * qk_scale


@triton.jit
def pv_dot(p, v, F32_DOT: tl.constexpr):
    """p [R, BS] @ v [BS, D] in float32: exact fp32 products for fp32 engines (and the interpreter, whose bf16
    dot is wrong), else p rounded to v's dtype for the tensor cores."""
    if F32_DOT:
        return tl.dot(p, v.to(tl.float32), input_precision="ieee")
    return tl.dot(p.to(v.dtype), v)


@triton.jit
def softmax_result(acc, m_i, l_i):
    """A split's normalised output [R, D] and its log-sum-exp [R] (log2 units; -inf for an empty split)."""
    valid = l_i > 0
    safe = tl.where(valid, l_i, 1.0)
    return acc / safe[:, None], tl.where(valid, m_i + tl.log2(safe), float("-inf"))


@triton.jit
def _split_kernel(q_ptr, k_ptr, v_ptr, len_ptr, o_ptr, lse_ptr, qk_scale, chunk,
                  sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
                  HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
                  NSPLIT: tl.constexpr, F32_DOT: tl.constexpr, CHUNK_BY_LENGTH: tl.constexpr):
    bh, sp = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    length = tl.load(len_ptr + b)
    if CHUNK_BY_LENGTH:  # spread the sequence's actual length over the splits (fewer blocks a program)
        chunk = tl.cdiv(tl.cdiv(length, NSPLIT), BS) * BS
    start = sp * chunk
    end = tl.minimum(start + chunk, length)
    rg, rd = tl.arange(0, GP), tl.arange(0, D)
    q = tl.load(q_ptr + b * sq_b + (h * G + rg)[:, None] * sq_h + rd[None, :], mask=(rg < G)[:, None], other=0.0)
    if F32_DOT:  # Triton 3.9's interpreter computes bf16 tl.dot wrongly
        q = q.to(tl.float32)
    m_i = tl.full((GP,), float("-inf"), tl.float32)
    l_i = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    for s0 in range(start, end, BS):  # empty when this split lies past the sequence's end
        rs = s0 + tl.arange(0, BS)
        smask = rs < end
        k = tl.load(k_ptr + b * sk_b + h * sk_h + rs[:, None] * sk_s + rd[None, :], mask=smask[:, None], other=0.0)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + rs[:, None] * sv_s + rd[None, :], mask=smask[:, None], other=0.0)
        qk = qk_dot(q, k, qk_scale, F32_DOT)  # [GP, BS], log2 units
        qk = tl.where(smask[None, :], qk, float("-inf"))
        p, alpha, m_i, l_i = online_softmax(qk, m_i, l_i)
        acc = acc * alpha[:, None] + pv_dot(p, v, F32_DOT)
    out, lse = softmax_result(acc, m_i, l_i)
    row = (b * HKV * G + h * G + rg) * NSPLIT + sp  # partials [B, Hq, NSPLIT, D]
    tl.store(o_ptr + row[:, None] * D + rd[None, :], out, mask=(rg < G)[:, None])
    tl.store(lse_ptr + row, lse, mask=rg < G)


@triton.jit
def _merge_kernel(o_ptr, lse_ptr, out_ptr, so_b, so_h, HQ: tl.constexpr, D: tl.constexpr, NSPLIT: tl.constexpr,
                  PDL: tl.constexpr = False):
    """Combine the NSPLIT partials of one (row, query head) -> out[row, head]; also the tree kernel's merge
    (row = query token). Every row sees at least one position, so some split's lse is finite."""
    bh = tl.program_id(0)
    rs, rd = tl.arange(0, NSPLIT), tl.arange(0, D)
    pdl.launch_dependents(PDL)
    pdl.wait(PDL)  # the partials are the split kernel's output
    lse = tl.load(lse_ptr + bh * NSPLIT + rs)  # [NSPLIT]
    w = tl.exp2(lse - tl.max(lse, axis=0))
    o = tl.load(o_ptr + (bh * NSPLIT + rs)[:, None] * D + rd[None, :])  # [NSPLIT, D]
    out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(out_ptr + (bh // HQ) * so_b + (bh % HQ) * so_h + rd, out.to(out_ptr.dtype.element_ty))


def default_splits(batch: int, kv_heads: int, capacity: int, block: int = 64, sms: int = 132) -> int:
    """Splits (a power of 2) so that batch x kv heads x splits covers the GPU about twice."""
    want = triton.cdiv(2 * sms, batch * kv_heads)
    return max(1, min(triton.next_power_of_2(want), triton.next_power_of_2(triton.cdiv(capacity, block)), 64))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
                     scale: float | None = None, num_splits: int | None = None) -> torch.Tensor:
    """q [B, Hq, D], caches [B, Hkv, S, D] (last dim contiguous), lengths int32 [B] (>= 1) -> [B, Hq, D]."""
    b, hq, d = q.shape
    _, hkv, cap, _ = k_cache.shape
    assert k_cache.shape == v_cache.shape and k_cache.shape[0] >= b and k_cache.shape[3] == d and hq % hkv == 0
    assert q.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride(3) == 1 and d == triton.next_power_of_2(d)
    assert lengths.dtype == torch.int32 and lengths.shape == (b,)
    g = hq // hkv
    block = 64 if d <= 64 else 32
    nsplit = num_splits or default_splits(b, hkv, cap, block)
    assert nsplit == triton.next_power_of_2(nsplit), nsplit
    chunk = triton.cdiv(triton.cdiv(cap, nsplit), block) * block
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    part = torch.empty(b, hq, nsplit, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, hq, nsplit, dtype=torch.float32, device=q.device)
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    _split_kernel[(b * hkv, nsplit)](q, k_cache, v_cache, lengths, part, lse, scale * 1.4426950408889634, chunk,
                                     q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3],
                                     HKV=hkv, G=g, GP=max(16, triton.next_power_of_2(g)), D=d, BS=block,
                                     NSPLIT=nsplit, F32_DOT=interp or q.dtype == torch.float32,
                                     CHUNK_BY_LENGTH=num_splits is None, num_warps=4)
    out = torch.empty_like(q)
    _merge_kernel[(b * hq,)](part, lse, out, out.stride(0), out.stride(1), HQ=hq, D=d, NSPLIT=nsplit)
    return out
