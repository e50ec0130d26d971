"""Tree attention for speculative verification: a few query tokens against the KV cache in place, beside its
PyTorch reference `tree_attention_ref`.

A verification pass sends T = root + draft nodes (2..64) through the target at once; each query sees the
committed prefix plus its own ancestors in the draft tree, which a bool mask [T, L] says. The dense path
(SDPA) copies the cache to repeat it for every query head of a group (GQA) and scans the whole capacity a
CUDA graph attends over; here, as in flash-decoding (engine/kernels/decode_attention.py), the sequence is
split across programs (grid: kv head x split x block of query rows), each program loads a K/V block once for
up to 64 of the T x G query rows that share the kv head, applies the mask, keeps an online softmax, and writes a partial output with its
log-sum-exp; a second kernel merges the splits. `lengths` (read on the device) bounds the keys read, so one
captured graph serves every position: each split's share is computed from it.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from engine.kernels.decode_attention import _merge_kernel, online_softmax, pv_dot, softmax_result

MAX_T = 64  # query tokens a call may carry (rows = T x group size are one tile)


def tree_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                       lengths: torch.Tensor, scale: float) -> torch.Tensor:
    """q [1, Hq, T, D], k/v [1, Hkv, L, D], mask bool [1, 1, T, L] (True = attend), lengths int [1] (keys at or
    past it are never read) -> [1, Hq, T, D], in float32 arithmetic."""
    hq, hkv = q.shape[1], k.shape[1]
    L = k.shape[2]
    m = mask[0, 0] & (torch.arange(L, device=q.device) < lengths[0])[None, :]  # [T, L]
    kf = k[0].float().repeat_interleave(hq // hkv, 0)
    vf = v[0].float().repeat_interleave(hq // hkv, 0)
    s = (q[0].float() @ kf.transpose(1, 2)) * scale  # [Hq, T, L]
    s = s.masked_fill(~m[None], float("-inf"))
    return (torch.softmax(s, -1) @ vf)[None].to(q.dtype)


@triton.jit
def _split_kernel(q_ptr, k_ptr, v_ptr, m_ptr, len_ptr, o_ptr, lse_ptr, qk_scale,
                  sq_h, sq_t, sk_h, sk_s, sv_h, sv_s, sm_t, sm_s,
                  T: tl.constexpr, HQ: tl.constexpr, G: tl.constexpr, RP: tl.constexpr, D: tl.constexpr,
                  BS: tl.constexpr, NSPLIT: tl.constexpr, F32_DOT: tl.constexpr):
    h, sp, rb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    length = tl.load(len_ptr)
    chunk = tl.cdiv(tl.cdiv(length, NSPLIT), BS) * BS  # this length spread over the splits, in whole blocks
    start = sp * chunk
    end = tl.minimum(start + chunk, length)
    r, rd = rb * RP + tl.arange(0, RP), tl.arange(0, D)  # this program's block of query rows
    t, g = r // G, r % G  # row r = query token t, query head h * G + g
    rmask = r < T * G
    q = tl.load(q_ptr + t[:, None] * sq_t + (h * G + g)[:, None] * sq_h + rd[None, :], mask=rmask[:, None],
                other=0.0)
    if F32_DOT:  # Triton 3.9's interpreter computes bf16 tl.dot wrongly; fp32 engines want exact products
        q = q.to(tl.float32)
    m_i = tl.full((RP,), float("-inf"), tl.float32)
    l_i = tl.zeros((RP,), tl.float32)
    acc = tl.zeros((RP, D), tl.float32)
    for s0 in range(start, end, BS):  # empty when this split lies past the sequence's end
        rs = s0 + tl.arange(0, BS)
        smask = rs < end
        k = tl.load(k_ptr + h * sk_h + rs[:, None] * sk_s + rd[None, :], mask=smask[:, None], other=0.0)
        v = tl.load(v_ptr + h * sv_h + rs[:, None] * sv_s + rd[None, :], mask=smask[:, None], other=0.0)
        seen = tl.load(m_ptr + t[:, None] * sm_t + rs[None, :] * sm_s, mask=rmask[:, None] & smask[None, :],
                       other=0) != 0  # [RP, BS]: the tree mask row of each query row's token
        if F32_DOT:
            qk = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee") * qk_scale
        else:
            qk = tl.dot(q, tl.trans(k.to(q.dtype))) * qk_scale  # [RP, BS], log2 units
        qk = tl.where(seen, qk, float("-inf"))  # a row may see nothing in a block: online_softmax keeps it at 0
        p, alpha, m_i, l_i = online_softmax(qk, m_i, l_i)
        acc = acc * alpha[:, None] + pv_dot(p, v, F32_DOT)
    out, lse = softmax_result(acc, m_i, l_i)
    prow = (t * HQ + h * G + g) * NSPLIT + sp  # partials [T, Hq, NSPLIT, D]
    tl.store(o_ptr + prow[:, None] * D + rd[None, :], out, mask=rmask[:, None])
    tl.store(lse_ptr + prow, lse, mask=rmask)


def supports(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether tree_attention takes these shapes: one sequence, 2..MAX_T queries, a power-of-2 head size."""
    B, hq, T, d = q.shape
    return (B == 1 and 1 < T <= MAX_T and mask is not None and d == triton.next_power_of_2(d) and d >= 16
            and hq % k.shape[1] == 0 and k.stride(-1) == 1)


def tree_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor,
                   scale: float, num_splits: int | None = None) -> torch.Tensor:
    """As tree_attention_ref: q [1, Hq, T, D] (any strides, last dim contiguous), k/v [1, Hkv, L, D] cache
    views, mask bool [1, 1, T, L], lengths int32 [1] on the device -> [1, Hq, T, D] (a view of a [1, T, Hq, D]
    tensor, so the caller's transpose + reshape to [1, T, Hq * D] copies nothing)."""
    _, hq, T, d = q.shape
    hkv, L = k.shape[1], k.shape[2]
    assert supports(q, k, mask) and v.stride(-1) == 1 and q.stride(-1) == 1, (q.shape, k.shape)
    g = hq // hkv
    block = 64 if d <= 64 else 32
    rp = max(16, min(64, triton.next_power_of_2(T * g)))  # query rows a program (T x G rows in blocks)
    # splits (a power of 2): enough programs to cover the GPU for a long context, at least one block each
    nsplit = num_splits or max(1, min(32, triton.next_power_of_2(triton.cdiv(L, 4 * block))))
    m2 = mask[0, 0]
    if m2.dtype == torch.bool:
        m2 = m2.view(torch.uint8)  # same bytes; Triton loads bool pointers as int1 on some versions
    part = torch.empty(T, hq, nsplit, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(T, hq, nsplit, dtype=torch.float32, device=q.device)
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    _split_kernel[(hkv, nsplit, triton.cdiv(T * g, rp))](q, k, v, m2, lengths, part, lse, scale * 1.4426950408889634,
                                 q.stride(1), q.stride(2), k.stride(1), k.stride(2), v.stride(1), v.stride(2),
                                 m2.stride(0), m2.stride(1), T=T, HQ=hq, G=g, RP=rp, D=d, BS=block, NSPLIT=nsplit,
                                 F32_DOT=interp or q.dtype == torch.float32, num_warps=4)
    out = torch.empty(1, T, hq, d, dtype=q.dtype, device=q.device)
    # decode_attention's merge, with query token t in the place of the batch row
    _merge_kernel[(T * hq,)](part, lse, out, out.stride(1), out.stride(2), HQ=hq, D=d, NSPLIT=nsplit)
    return out.transpose(1, 2)
