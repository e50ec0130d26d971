"""One kernel for a decode step's attention: rotary on q and the new k, the K/V cache write, and attention.

Beside its PyTorch reference `rope_decode_attention_ref` (rotary.rotary_kv_ref then
decode_attention.decode_attention_ref). Each program serves one (row, KV head) and all G = Hq / Hkv query heads
that share it (GQA). It ropes q and the new k in registers, attends over the cache's old positions [0, pos) and
adds the new token from registers, so the cache write (done by split 0) never races a read of the same step.

Two regimes, fixed at launch by a bound on the lengths (max_len), so that a CUDA graph captured for a bound
serves every step under it:
- one split (max_len <= SINGLE_MAX): one program per (row, KV head) walks the whole sequence and writes the
  output. One launch instead of three (rotary, split, merge): the short sequences of a chat turn.
- several splits (flash-decoding): each split takes its share of [0, pos), computed on the device from the
  row's length, and writes a partial output with its log-sum-exp; split 0 also holds the new token;
  decode_attention's merge kernel combines them. Two launches instead of three.
Merging inside the kernel instead (the last split to finish, found with an atomic ticket, merges) was measured
and dropped: 7-12 us a layer against 5-6.5 for a separate merge (docs/gpu_results.md).
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from engine.kernels import pdl
from engine.kernels.decode_attention import (_merge_kernel, decode_attention_ref, default_splits, online_softmax,
                                             pv_dot, softmax_result)
from engine.kernels.rotary import rotary_kv_ref

SINGLE_MAX = 384  # longest sequence one program walks alone (single-pass vs split + merge cross near here, H200)


def rope_decode_attention_ref(q, k, v, cos, sin, k_cache, v_cache, rows, pos, scale=None) -> torch.Tensor:
    """q [B, Hq, D], k/v [B, Hkv, D] (not yet roped), cos/sin [B, D] or [B, D / 2] (rows at each position),
    caches [maxB, Hkv, S, D], rows/pos int32 [B] -> attention output [B, Hq, D]; k, v written at (rows, pos).
    q is not modified."""
    q = q.clone()
    rotary_kv_ref(q, k, v, cos, sin, k_cache, v_cache, rows, pos)
    r = rows.long()
    return decode_attention_ref(q, k_cache[r], v_cache[r], (pos + 1).to(torch.int32), scale)


@triton.jit
def _kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, row_ptr, pos_ptr, o_ptr, part_ptr, lse_ptr,
            qk_scale, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h, s_cos, s_sin,
            sc_b, sc_h, sc_s, svc_b, svc_h, svc_s,
            HKV: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, HALF: tl.constexpr, BS: tl.constexpr,
            NSPLIT: tl.constexpr, F32_DOT: tl.constexpr, PDL: tl.constexpr):
    bh, sp = tl.program_id(0), tl.program_id(1)
    b, h = bh // HKV, bh % HKV
    # PDL: the grid is a few dozen programs at most, so the next kernel may be scheduled at once; everything
    # read below (q/k/v, rotary rows, positions, the cache) is written earlier in the step or by earlier steps
    pdl.launch_dependents(PDL)
    pdl.wait(PDL)
    row = tl.load(row_ptr + b)
    old = tl.load(pos_ptr + b)  # cache positions [0, old) were written by earlier steps
    rg, rd = tl.arange(0, GP), tl.arange(0, HALF)
    gmask = (rg < G)[:, None]
    cos = tl.load(cos_ptr + b * s_cos + rd).to(tl.float32)
    sin = tl.load(sin_ptr + b * s_sin + rd).to(tl.float32)

    # rotary on this head group's queries; rounded to q's dtype as a separate rotary kernel would store them
    qb = q_ptr + b * sq_b + (h * G + rg)[:, None] * sq_h + rd[None, :]
    x1 = tl.load(qb, mask=gmask, other=0.0).to(tl.float32)
    x2 = tl.load(qb + HALF, mask=gmask, other=0.0).to(tl.float32)
    q1 = (x1 * cos[None, :] - x2 * sin[None, :]).to(q_ptr.dtype.element_ty)
    q2 = (x2 * cos[None, :] + x1 * sin[None, :]).to(q_ptr.dtype.element_ty)
    if F32_DOT:  # fp32: exact products (the engine's fp32 mode matches its CPU path); the interpreter's bf16 dot is wrong
        q1, q2 = q1.to(tl.float32), q2.to(tl.float32)

    # the new token's k (roped, rounded to the cache dtype as stored) and v
    kb = k_ptr + b * sk_b + h * sk_h
    y1 = tl.load(kb + rd).to(tl.float32)
    y2 = tl.load(kb + HALF + rd).to(tl.float32)
    kn1 = (y1 * cos - y2 * sin).to(kc_ptr.dtype.element_ty)
    kn2 = (y2 * cos + y1 * sin).to(kc_ptr.dtype.element_ty)
    vb = v_ptr + b * sv_b + h * sv_h
    vn1 = tl.load(vb + rd).to(vc_ptr.dtype.element_ty)
    vn2 = tl.load(vb + HALF + rd).to(vc_ptr.dtype.element_ty)
    if sp == 0:  # one writer; nobody reads slot `old` in this step
        kd = kc_ptr + row * sc_b + h * sc_h + old * sc_s
        vd = vc_ptr + row * svc_b + h * svc_h + old * svc_s
        tl.store(kd + rd, kn1)
        tl.store(kd + HALF + rd, kn2)
        tl.store(vd + rd, vn1)
        tl.store(vd + HALF + rd, vn2)

    # this program's share of the old positions
    chunk = tl.cdiv(tl.cdiv(old, NSPLIT), BS) * BS  # the row's actual length spread over the splits
    start = sp * chunk
    end = tl.minimum(start + chunk, old)  # empty past the sequence's end
    m_i = tl.full((GP,), float("-inf"), tl.float32)
    l_i = tl.zeros((GP,), tl.float32)
    acc1 = tl.zeros((GP, HALF), tl.float32)
    acc2 = tl.zeros((GP, HALF), tl.float32)
    kbase = kc_ptr + row * sc_b + h * sc_h
    vbase = vc_ptr + row * svc_b + h * svc_h
    for s0 in range(start, end, BS):  # empty when this split has nothing to do
        rs = s0 + tl.arange(0, BS)
        smask = (rs < end)[:, None]
        kp = kbase + rs[:, None] * sc_s + rd[None, :]
        vp = vbase + rs[:, None] * svc_s + rd[None, :]
        k1 = tl.load(kp, mask=smask, other=0.0).to(q1.dtype)
        k2 = tl.load(kp + HALF, mask=smask, other=0.0).to(q1.dtype)
        v1 = tl.load(vp, mask=smask, other=0.0)
        v2 = tl.load(vp + HALF, mask=smask, other=0.0)
        if F32_DOT:
            qk = tl.dot(q1, tl.trans(k1), input_precision="ieee") + tl.dot(q2, tl.trans(k2), input_precision="ieee")
        else:
            qk = tl.dot(q1, tl.trans(k1)) + tl.dot(q2, tl.trans(k2))
        qk = tl.where((rs < end)[None, :], qk * qk_scale, float("-inf"))  # log2 units
        p, alpha, m_i, l_i = online_softmax(qk, m_i, l_i)
        acc1 = acc1 * alpha[:, None] + pv_dot(p, v1, F32_DOT)
        acc2 = acc2 * alpha[:, None] + pv_dot(p, v2, F32_DOT)
    if sp == 0:  # the new token, from registers: one more "block" of a single position
        s_new = tl.sum(q1.to(tl.float32) * kn1.to(tl.float32)[None, :] + q2.to(tl.float32) * kn2.to(tl.float32)[None, :],
                       axis=1) * qk_scale
        p, alpha, m_i, l_i = online_softmax(s_new[:, None], m_i, l_i)  # p [GP, 1]
        acc1 = acc1 * alpha[:, None] + p * vn1.to(tl.float32)[None, :]
        acc2 = acc2 * alpha[:, None] + p * vn2.to(tl.float32)[None, :]

    if NSPLIT == 1:
        ob = o_ptr + (b * HKV * G + h * G + rg)[:, None] * (2 * HALF) + rd[None, :]  # out [B, Hq, D] contiguous
        tl.store(ob, (acc1 / l_i[:, None]).to(o_ptr.dtype.element_ty), mask=gmask)
        tl.store(ob + HALF, (acc2 / l_i[:, None]).to(o_ptr.dtype.element_ty), mask=gmask)
    else:  # partials [B, Hq, NSPLIT, D] and lse [B, Hq, NSPLIT], as decode_attention's merge reads them
        o1, lse = softmax_result(acc1, m_i, l_i)
        o2, _ = softmax_result(acc2, m_i, l_i)
        prow = (b * HKV * G + h * G + rg) * NSPLIT + sp
        pp = part_ptr + prow[:, None] * (2 * HALF) + rd[None, :]
        tl.store(pp, o1, mask=gmask)
        tl.store(pp + HALF, o2, mask=gmask)
        tl.store(lse_ptr + prow, lse, mask=rg < G)


def rope_decode_attention(q, k, v, cos, sin, k_cache, v_cache, rows, pos, scale=None, max_len: int | None = None,
                          num_splits: int | None = None, block: int | None = None, num_warps: int = 4
                          ) -> torch.Tensor:
    """Triton version of `rope_decode_attention_ref` (q, k, v may be strided views of one qkv projection;
    the last dim of every tensor contiguous). cos/sin rows: [B, D] (both halves equal, engine/rope.py) or
    [B, D / 2]. max_len: a bound on every row's pos + 1 (default: the cache's capacity); it picks the regime,
    never the result. q is not modified."""
    b, hq, d = q.shape
    hkv = k.shape[1]
    _, _, cap, _ = k_cache.shape
    half = d // 2
    assert d % 2 == 0 and half == triton.next_power_of_2(half) and half >= 16 and hq % hkv == 0
    assert q.stride(2) == k.stride(2) == v.stride(2) == k_cache.stride(3) == v_cache.stride(3) == 1
    assert cos.stride(1) == sin.stride(1) == 1 and cos.shape[0] == b and cos.shape[1] in (half, d)
    assert rows.dtype == pos.dtype == torch.int32 and rows.shape == pos.shape == (b,)
    g = hq // hkv
    block = block or (64 if d <= 64 else 32)
    max_len = min(max_len or cap, cap)
    nsplit = num_splits or (1 if max_len <= SINGLE_MAX else default_splits(b, hkv, max_len, block))
    assert nsplit == triton.next_power_of_2(nsplit), nsplit
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    out = torch.empty(b, hq, d, dtype=q.dtype, device=q.device)
    part = torch.empty(b, hq, nsplit, d, dtype=torch.float32, device=q.device) if nsplit > 1 else out
    lse = torch.empty(b, hq, nsplit, dtype=torch.float32, device=q.device) if nsplit > 1 else out
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    on = pdl.enabled(q.device)
    _kernel[(b * hkv, nsplit)](q, k, v, cos, sin, k_cache, v_cache, rows, pos, out, part, lse,
                               scale * 1.4426950408889634, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                               v.stride(0), v.stride(1), cos.stride(0), sin.stride(0),
                               *k_cache.stride()[:3], *v_cache.stride()[:3],
                               HKV=hkv, G=g, GP=max(16, triton.next_power_of_2(g)), HALF=half, BS=block,
                               NSPLIT=nsplit, F32_DOT=interp or q.dtype == torch.float32, PDL=on,
                               num_warps=num_warps, **pdl.launch_kwargs(on))
    if nsplit > 1:
        _merge_kernel[(b * hq,)](part, lse, out, out.stride(0), out.stride(1), HQ=hq, D=d, NSPLIT=nsplit, PDL=on,
                                 **pdl.launch_kwargs(on))
    return out
