"""A batch-1 int4 decode step's decoder layers in one persistent kernel, beside its PyTorch reference.

Why: at the MiniCPM4-0.5B shape a decode step is ~150 kernels of ~3 us each while its weights stream in ~80 us:
the step is launch-bound. Here every layer's work runs in ONE launch of one program per SM ("no bubbles"
megakernel, Hazy Research), its phases separated by a grid-wide barrier (infllm_v2._grid_sync) instead of
kernel boundaries. Per layer:
  1. RMSNorm (each program recomputes 1/rms from x: H values, cheap) + the qkv GEMV, rows spread over programs;
  2. rotary on q and the new k, K/V written into the cache, attention over [0, pos] split over (kv head,
     sequence split) programs; the last split of a kv head to finish (an atomic ticket) merges its G query
     heads, so no grid barrier is spent on the merge;
  3. o GEMV + residual (MiniCPM's residual scale is folded into the o and down weights by the caller);
  4. RMSNorm + gate_up GEMV (rows interleaved gate, up) + SwiGLU;
  5. down GEMV + residual.
x is updated in place. Each GEMV phase loads its first weight tile BEFORE waiting at the barrier (weights do not
depend on the step), so the barrier's wait overlaps the weight stream. Data written by other programs of the
same launch (x, qkv, attention output, SwiGLU output, partials) is read with `.cg` loads (through L2: an SM's
L1 is not coherent with the other SMs' stores).

The barrier needs every program resident: grid = SM count, one program per SM. The CPU interpreter runs
programs one after another, where a barrier would deadlock: there (PHASE = 1..5) each phase of each layer is
its own launch, the same code without the barriers.

Weights are the int4 kernel layout of engine/kernels/int4_matmul.py (`PackedInt4`, its dequant helpers are
imported), stacked over layers so one pointer and a layer stride reach every layer. The online-softmax helpers
are decode_attention.py's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl

from engine.kernels.decode_attention import online_softmax, pv_dot, softmax_result
from engine.kernels.infllm_v2 import _grid_sync
from engine.kernels.int4_matmul import (PackedInt4, _column, _interleaved, _magic_const,
                                        int4_matmul_ref, interpreting, repack_int4)
from engine.kernels.rmsnorm import rms_norm_ref
from engine.kernels.rope_decode_attention import rope_decode_attention_ref
from engine.quant import Int4Weight

BS = 64  # attention block (positions a step of the sequence loop)
MAX_MERGE = 8192  # GM x NSPLIT x D values the merging program loads at once (registers), bounds NSPLIT


@dataclass
class StackedInt4:
    """PackedInt4 tensors of every layer stacked on a leading layer axis (layer l = index l)."""
    qweight: torch.Tensor  # int32 [L, N / 4, K / 8, 4]
    scales: torch.Tensor  # [L, K / G, N]
    mins: torch.Tensor  # [L, K / G, N]
    group_size: int

    @classmethod
    def of(cls, packs: list[PackedInt4]) -> "StackedInt4":
        g = packs[0].group_size
        assert all(p.group_size == g and p.perm is None and p.shape == packs[0].shape for p in packs)
        assert packs[0].shape[0] % 4 == 0, "rows must come in fours (the kernel's word groups)"
        return cls(torch.stack([p.qweight for p in packs]), torch.stack([p.scales for p in packs]),
                   torch.stack([p.mins for p in packs]), g)

    def layer(self, i: int) -> PackedInt4:
        """Layer i as a PackedInt4 (views: no copy)."""
        return PackedInt4(self.qweight[i], self.scales[i], self.mins[i], self.group_size)

    @property
    def shape(self) -> tuple[int, int]:
        return self.scales.shape[2], self.qweight.shape[2] * 8


@dataclass
class DecodeLayers:
    """Everything the kernel reads that does not change between steps: the layers' weights (qkv; o and down with
    the residual scale folded in; gate_up rows interleaved gate0, up0, ...) and norms, and the model's shape."""
    qkv: StackedInt4
    o: StackedInt4
    gate_up: StackedInt4
    down: StackedInt4
    ln1: torch.Tensor  # [L, H]
    ln2: torch.Tensor  # [L, H]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    eps: float
    scale: float  # attention softmax scale
    scratch: dict = field(default_factory=dict, repr=False)  # (device, dtype) -> Scratch, made on first use

    @property
    def num_layers(self) -> int:
        return self.ln1.shape[0]

    @classmethod
    def pack(cls, qkv: list[Int4Weight], o: list[Int4Weight], gate_up: list[Int4Weight], down: list[Int4Weight],
             ln1: list[torch.Tensor], ln2: list[torch.Tensor], num_heads: int, num_kv_heads: int, head_dim: int,
             eps: float, scale: float) -> "DecodeLayers":
        """From each layer's engine weights (no act-order; o and down already carrying any residual scale;
        gate_up as [gate | up]): repacked to the kernel layout and stacked (one copy of the codes)."""
        def stack(ws: list[Int4Weight], swiglu: bool = False) -> StackedInt4:
            return StackedInt4.of([repack_int4(_interleaved(w) if swiglu else w) for w in ws])

        return cls(stack(qkv), stack(o), stack(gate_up, swiglu=True), stack(down), torch.stack(ln1),
                   torch.stack(ln2), num_heads, num_kv_heads, head_dim, eps, scale)

    @staticmethod
    def supports(w: Int4Weight) -> bool:
        """Whether one engine weight can take part (the kernel's group sizes, no act-order, K a whole number
        of groups, rows in fours)."""
        n, k = w.shape
        return w.perm is None and w.group_size in (32, 64, 128) and k % w.group_size == 0 and n % 4 == 0


# ----------------------------------------------------------------------------------------------------------
# reference: the per-op path, op by op in plain PyTorch

def decode_layers_ref(x: torch.Tensor, w: DecodeLayers, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x [1, H] (the scaled embedding row), cos/sin [1, D] rows at the position, caches [L, maxB, KVH, S, D],
    rows/pos int32 [1] -> x after every layer [1, H] (x's dtype); each layer's k, v written at (rows, pos).
    Roundings as the per-op CUDA path: qkv, attention output, x after o and after down, SwiGLU output in x's
    dtype; norms in fp32 inside the GEMVs."""
    nh, kvh, d = w.num_heads, w.num_kv_heads, w.head_dim
    for i in range(w.num_layers):
        qkv = int4_matmul_ref(_rms(x, w.ln1[i], w.eps), w.qkv.layer(i)).to(x.dtype)
        q, k, v = qkv.split([nh * d, kvh * d, kvh * d], dim=-1)
        o = rope_decode_attention_ref(q.view(1, nh, d), k.view(1, kvh, d), v.view(1, kvh, d), cos, sin, k_cache[i],
                                      v_cache[i], rows, pos, w.scale)
        x = int4_matmul_ref(o.reshape(1, nh * d), w.o.layer(i), residual=x)
        h = _rms(x, w.ln2[i], w.eps)
        a = int4_matmul_ref(h, w.gate_up.layer(i), swiglu=True).to(x.dtype)
        x = int4_matmul_ref(a, w.down.layer(i), residual=x)
    return x


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """fp32 RMSNorm, not rounded to x's dtype (the int4 GEMV's norm prologue keeps it in fp32)."""
    return rms_norm_ref(x, weight, eps, out_dtype=torch.float32)[0]


# ----------------------------------------------------------------------------------------------------------
# kernel pieces

@triton.jit
def _rstd(x_ptr, K, eps, BK: tl.constexpr):
    """1 / rms of x [K] (written by other programs of this launch: read through L2)."""
    ss = tl.zeros((BK,), tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        xv = tl.load(x_ptr + rk, mask=rk < K, other=0.0, cache_modifier=".cg").to(tl.float32)
        ss += xv * xv
    return tl.rsqrt(tl.sum(ss, axis=0) / K + eps)


@triton.jit
def _load_quads(q_ptr, s_ptr, m_ptr, r4, k0, N, K, G: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Words [BN / 4, BK / 8, 4] of the row quads r4 (rows 4 r4 + c) from column k0, and each word's 16 s and
    m - 16 s. A quad's words are one contiguous stream (int4_matmul's layout: the same word of 4 rows side by
    side), and this shape keeps it the fastest-varying one, so a warp's loads are coalesced for any BN (a
    [BK / 8, BN] tile, as the GEMV's, strides a warp across quads once BN > 8: measured 3-6x slower here)."""
    kk = (k0 // 8 + tl.arange(0, BK // 8))[None, :, None]
    c = tl.arange(0, 4)[None, None, :]
    rn = r4[:, None, None] * 4 + c
    mask = (kk < K // 8) & (rn < N)
    q = tl.load(q_ptr + r4[:, None, None] * (K // 8 * 4) + kk * 4 + c, mask=mask, other=0)
    grp = kk * 8 // G
    s = tl.load(s_ptr + grp * N + rn, mask=mask, other=0.0).to(tl.float32) * 16.0
    mn = tl.load(m_ptr + grp * N + rn, mask=mask, other=0.0).to(tl.float32) - s
    return q, s, mn


@triton.jit
def _tile_dot(acc, q, s, mn, k0, x_ptr, nw_ptr, rstd, K, G: tl.constexpr, NORM: tl.constexpr, BK: tl.constexpr):
    """acc [BN / 4, BK / 8, 4] += the words of `_load_quads` times x (the int4 GEMV's math: one scale per word;
    x read through L2, optionally RMS-normalised on the fly)."""
    kk = (k0 // 8 + tl.arange(0, BK // 8))[None, :, None]
    part = tl.zeros(acc.shape, tl.float32)
    xsum = tl.zeros((1, BK // 8, 1), tl.float32)
    for j in tl.static_range(8):
        col = _column(kk, j, G)
        xj = tl.load(x_ptr + col, mask=kk < K // 8, other=0.0, cache_modifier=".cg").to(tl.float32)
        if NORM:
            xj = xj * rstd * tl.load(nw_ptr + col, mask=kk < K // 8, other=0.0).to(tl.float32)
        xsum += xj
        part += xj * _magic_const(q, j)
    return acc + part * s + xsum * mn


@triton.jit
def _gemv_phase(x_ptr, q_ptr, s_ptr, m_ptr, out_ptr, nw_ptr, bar_ptr, eps, pid, n_prog, sync, N, K,
                G: tl.constexpr, NORM: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr,
                BN: tl.constexpr, BK: tl.constexpr, PIPE: tl.constexpr):
    """out = x @ W^T (one layer's W: pointers already offset), tiles of BN rows dealt round-robin to programs.
    The first tile's first weights load before the barrier (`sync`: wait for the previous phase), and each
    tile's successor's first weights load before its epilogue. RESIDUAL: out += out (in place, own rows only);
    SWIGLU: rows come as (gate, up) pairs, out gets silu(gate) * up (N / 2 values)."""
    n_tiles = tl.cdiv(N, BN)
    Q: tl.constexpr = BN // 4
    q, s, mn = _load_quads(q_ptr, s_ptr, m_ptr, pid * Q + tl.arange(0, Q), 0, N, K, G, BN, BK)
    if sync:
        _grid_sync(bar_ptr, n_prog)
    rstd = 1.0
    if NORM:
        rstd = _rstd(x_ptr, K, eps, 1024)
    for t in range(pid, n_tiles, n_prog):
        r4 = t * Q + tl.arange(0, Q)
        acc = tl.zeros((Q, BK // 8, 4), tl.float32)
        if PIPE:  # registers double-buffered: the next chunk's (or next tile's first) weights load during this math
            for k0 in range(0, K, BK):
                last = k0 + BK >= K
                qn, sn, mnn = _load_quads(q_ptr, s_ptr, m_ptr, tl.where(last, r4 + n_prog * Q, r4),
                                          tl.where(last, 0, k0 + BK), N, K, G, BN, BK)
                acc = _tile_dot(acc, q, s, mn, k0, x_ptr, nw_ptr, rstd, K, G, NORM, BK)
                q, s, mn = qn, sn, mnn
        else:
            acc = _tile_dot(acc, q, s, mn, 0, x_ptr, nw_ptr, rstd, K, G, NORM, BK)
            for k0 in range(BK, K, BK):
                q, s, mn = _load_quads(q_ptr, s_ptr, m_ptr, r4, k0, N, K, G, BN, BK)
                acc = _tile_dot(acc, q, s, mn, k0, x_ptr, nw_ptr, rstd, K, G, NORM, BK)
            # the next tile's first weights (masked off past the last tile) are in flight during this epilogue
            q, s, mn = _load_quads(q_ptr, s_ptr, m_ptr, r4 + n_prog * Q, 0, N, K, G, BN, BK)
        rn = t * BN + tl.arange(0, BN)
        out = tl.reshape(tl.sum(acc, axis=1), (BN,))  # row 4 r4 + c
        if SWIGLU:
            g, u = tl.split(tl.reshape(out, (BN // 2, 2)))
            out = g / (1.0 + tl.exp(-g)) * u
            ro = t * (BN // 2) + tl.arange(0, BN // 2)
            omask = ro < N // 2
        else:
            ro = rn
            omask = ro < N
        if RESIDUAL:
            out += tl.load(out_ptr + ro, mask=omask, other=0.0, cache_modifier=".cg").to(tl.float32)
        tl.store(out_ptr + ro, out.to(out_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _attention_phase(qkv_ptr, o_ptr, part_ptr, lse_ptr, cnt_ptr, bar_ptr, kc_ptr, vc_ptr, cos_ptr, sin_ptr,
                     row_ptr, pos_ptr, qk_scale, pid, n_prog, sync, sc_b, sc_h, sc_s,
                     NH: tl.constexpr, KVH: tl.constexpr, GQ: tl.constexpr, GP: tl.constexpr, GM: tl.constexpr,
                     HALF: tl.constexpr, NSPLIT: tl.constexpr, BS: tl.constexpr, F32_DOT: tl.constexpr):
    """Program (kv head h, split sp) for pid < KVH * NSPLIT: rotary on the G query heads and the new k (from the
    qkv GEMV's output), k and v written at (row, pos) by split 0, attention over its share of [0, pos) plus,
    in split 0, the new token from registers (as rope_decode_attention). Splits write partials; the last split
    of h to arrive merges them into o (an atomic ticket per kv head, left at 0 for the next use)."""
    h = pid % KVH
    sp = pid // KVH
    row = tl.load(row_ptr)
    old = tl.load(pos_ptr)  # cache positions [0, old) were written by earlier steps
    rg, rd = tl.arange(0, GP), tl.arange(0, HALF)
    gmask = (rg < GQ)[:, None]
    cos = tl.load(cos_ptr + rd).to(tl.float32)
    sin = tl.load(sin_ptr + rd).to(tl.float32)
    chunk = tl.cdiv(tl.cdiv(old, NSPLIT), BS) * BS  # the actual length spread over the splits
    start = sp * chunk
    end = tl.minimum(start + chunk, old)
    kbase = kc_ptr + row * sc_b + h * sc_h
    vbase = vc_ptr + row * sc_b + h * sc_h
    # the first block of old K/V (written by earlier steps) loads before the barrier
    k1, k2, v1, v2 = _kv_block(kbase, vbase, start, end, sc_s, HALF, BS)
    if sync:
        _grid_sync(bar_ptr, n_prog)
    if pid < KVH * NSPLIT:
        qb = qkv_ptr + (h * GQ + rg)[:, None] * (2 * HALF) + rd[None, :]
        x1 = tl.load(qb, mask=gmask, other=0.0, cache_modifier=".cg").to(tl.float32)
        x2 = tl.load(qb + HALF, mask=gmask, other=0.0, cache_modifier=".cg").to(tl.float32)
        q1 = (x1 * cos[None, :] - x2 * sin[None, :]).to(qkv_ptr.dtype.element_ty)
        q2 = (x2 * cos[None, :] + x1 * sin[None, :]).to(qkv_ptr.dtype.element_ty)
        if F32_DOT:
            q1, q2 = q1.to(tl.float32), q2.to(tl.float32)
        kb = qkv_ptr + NH * 2 * HALF + h * 2 * HALF
        y1 = tl.load(kb + rd, cache_modifier=".cg").to(tl.float32)
        y2 = tl.load(kb + HALF + rd, cache_modifier=".cg").to(tl.float32)
        kn1 = (y1 * cos - y2 * sin).to(kc_ptr.dtype.element_ty)
        kn2 = (y2 * cos + y1 * sin).to(kc_ptr.dtype.element_ty)
        vb = kb + KVH * 2 * HALF
        vn1 = tl.load(vb + rd, cache_modifier=".cg").to(vc_ptr.dtype.element_ty)
        vn2 = tl.load(vb + HALF + rd, cache_modifier=".cg").to(vc_ptr.dtype.element_ty)
        if sp == 0:  # one writer; nobody reads slot `old` in this step
            tl.store(kbase + old * sc_s + rd, kn1)
            tl.store(kbase + old * sc_s + HALF + rd, kn2)
            tl.store(vbase + old * sc_s + rd, vn1)
            tl.store(vbase + old * sc_s + HALF + rd, vn2)
        m_i = tl.full((GP,), float("-inf"), tl.float32)
        l_i = tl.zeros((GP,), tl.float32)
        acc1 = tl.zeros((GP, HALF), tl.float32)
        acc2 = tl.zeros((GP, HALF), tl.float32)
        for s0 in range(start, end, BS):
            rs = s0 + tl.arange(0, BS)
            kc1, kc2 = k1.to(q1.dtype), k2.to(q1.dtype)
            vc1, vc2 = v1, v2
            k1, k2, v1, v2 = _kv_block(kbase, vbase, s0 + BS, end, sc_s, HALF, BS)  # the next block, in flight
            if F32_DOT:
                qk = tl.dot(q1, tl.trans(kc1), input_precision="ieee") + tl.dot(q2, tl.trans(kc2),
                                                                                 input_precision="ieee")
            else:
                qk = tl.dot(q1, tl.trans(kc1)) + tl.dot(q2, tl.trans(kc2))
            qk = tl.where((rs < end)[None, :], qk * qk_scale, float("-inf"))
            p, alpha, m_i, l_i = online_softmax(qk, m_i, l_i)
            acc1 = acc1 * alpha[:, None] + pv_dot(p, vc1, F32_DOT)
            acc2 = acc2 * alpha[:, None] + pv_dot(p, vc2, F32_DOT)
        if sp == 0:  # the new token, from registers
            s_new = tl.sum(q1.to(tl.float32) * kn1.to(tl.float32)[None, :]
                           + q2.to(tl.float32) * kn2.to(tl.float32)[None, :], axis=1) * qk_scale
            p, alpha, m_i, l_i = online_softmax(s_new[:, None], m_i, l_i)
            acc1 = acc1 * alpha[:, None] + p * vn1.to(tl.float32)[None, :]
            acc2 = acc2 * alpha[:, None] + p * vn2.to(tl.float32)[None, :]
        if NSPLIT == 1:
            ob = o_ptr + (h * GQ + rg)[:, None] * (2 * HALF) + rd[None, :]
            tl.store(ob, (acc1 / l_i[:, None]).to(o_ptr.dtype.element_ty), mask=gmask)
            tl.store(ob + HALF, (acc2 / l_i[:, None]).to(o_ptr.dtype.element_ty), mask=gmask)
        else:
            o1, lse = softmax_result(acc1, m_i, l_i)
            o2, _ = softmax_result(acc2, m_i, l_i)
            prow = (h * GQ + rg) * NSPLIT + sp
            pp = part_ptr + prow[:, None] * (2 * HALF) + rd[None, :]
            tl.store(pp, o1, mask=gmask)
            tl.store(pp + HALF, o2, mask=gmask)
            tl.store(lse_ptr + prow, lse, mask=rg < GQ)
            tl.debug_barrier()  # every thread's partial is written before the ticket says so
            if tl.atomic_add(cnt_ptr + h, 1, sem="acq_rel") == NSPLIT - 1:  # the last split of kv head h
                _merge(part_ptr, lse_ptr, o_ptr, h, GQ, GM, NSPLIT, 2 * HALF)
                tl.atomic_xchg(cnt_ptr + h, 0)  # ready for the next layer / step


@triton.jit
def _kv_block(kbase, vbase, s0, end, sc_s, HALF: tl.constexpr, BS: tl.constexpr):
    """Positions s0 .. s0 + BS - 1 (masked at end) of one kv head's cache: K and V halves [BS, HALF]."""
    rs = s0 + tl.arange(0, BS)
    rd = tl.arange(0, HALF)
    smask = (rs < end)[:, None]
    kp = kbase + rs[:, None] * sc_s + rd[None, :]
    vp = vbase + rs[:, None] * sc_s + rd[None, :]
    return (tl.load(kp, mask=smask, other=0.0), tl.load(kp + HALF, mask=smask, other=0.0),
            tl.load(vp, mask=smask, other=0.0), tl.load(vp + HALF, mask=smask, other=0.0))


@triton.jit
def _merge(part_ptr, lse_ptr, o_ptr, h, GQ: tl.constexpr, GM: tl.constexpr, NSPLIT: tl.constexpr,
           D: tl.constexpr):
    """o[h's query heads] = the splits' partials weighted by exp2(lse) (decode_attention._merge_kernel's math)."""
    rg, rsp, rd = tl.arange(0, GM), tl.arange(0, NSPLIT), tl.arange(0, D)
    hq = h * GQ + rg
    valid = rg < GQ
    lse = tl.load(lse_ptr + hq[:, None] * NSPLIT + rsp[None, :], mask=valid[:, None], other=0.0,
                  cache_modifier=".cg")  # [GM, NSPLIT]
    w = tl.exp2(lse - tl.max(lse, axis=1)[:, None])
    prt = tl.load(part_ptr + (hq[:, None, None] * NSPLIT + rsp[None, :, None]) * D + rd[None, None, :],
                  mask=valid[:, None, None], other=0.0, cache_modifier=".cg")  # [GM, NSPLIT, D]
    out = tl.sum(prt * w[:, :, None], axis=1) / tl.sum(w, axis=1)[:, None]
    tl.store(o_ptr + hq[:, None] * D + rd[None, :], out.to(o_ptr.dtype.element_ty), mask=valid[:, None])


@triton.jit
def _decode_layers_kernel(x_ptr, qkv_ptr, o_ptr, act_ptr, part_ptr, lse_ptr, cnt_ptr, bar_ptr,
                          ln1_ptr, ln2_ptr, wq_ptr, sq_ptr, mq_ptr, wo_ptr, so_ptr, mo_ptr,
                          wg_ptr, sg_ptr, mg_ptr, wd_ptr, sd_ptr, md_ptr,
                          kc_ptr, vc_ptr, cos_ptr, sin_ptr, row_ptr, pos_ptr,
                          layer0, n_layers, eps, qk_scale, sc_l, sc_b, sc_h, sc_s,
                          H: tl.constexpr, I: tl.constexpr, NH: tl.constexpr, KVH: tl.constexpr,
                          HALF: tl.constexpr, GQ: tl.constexpr, GP: tl.constexpr, GM: tl.constexpr,
                          G: tl.constexpr, NSPLIT: tl.constexpr, BS: tl.constexpr,
                          BN1: tl.constexpr, BK1: tl.constexpr, BN3: tl.constexpr, BK3: tl.constexpr,
                          BN4: tl.constexpr, BK4: tl.constexpr, BN5: tl.constexpr, BK5: tl.constexpr,
                          PHASE: tl.constexpr, F32_DOT: tl.constexpr, PIPE: tl.constexpr):
    """Layers layer0 .. layer0 + n_layers - 1 of a batch-1 decode step. PHASE 0: all five phases of every layer,
    grid barriers between them (one program per SM); PHASE p in 1..5: only phase p of layer layer0, no barrier
    (the interpreter: one launch a phase)."""
    pid, n_prog = tl.program_id(0), tl.num_programs(0)
    D = 2 * HALF
    NQKV = (NH + 2 * KVH) * D
    for layer in range(layer0, layer0 + n_layers):
        lq = tl.cast(layer, tl.int64)  # layer offsets of the cache may pass 2^31 elements
        if PHASE == 0 or PHASE == 1:  # norm + qkv
            _gemv_phase(x_ptr, wq_ptr + lq * (NQKV * H // 8), sq_ptr + lq * (H // G * NQKV),
                        mq_ptr + lq * (H // G * NQKV), qkv_ptr, ln1_ptr + lq * H, bar_ptr, eps, pid, n_prog,
                        (layer > layer0) & (PHASE == 0), NQKV, H, G, True, False, False, BN1, BK1, PIPE)
        if PHASE == 0 or PHASE == 2:  # rotary, cache write, attention (+ merge)
            _attention_phase(qkv_ptr, o_ptr, part_ptr, lse_ptr, cnt_ptr, bar_ptr, kc_ptr + lq * sc_l,
                             vc_ptr + lq * sc_l, cos_ptr, sin_ptr, row_ptr, pos_ptr, qk_scale, pid, n_prog,
                             PHASE == 0, sc_b, sc_h, sc_s, NH, KVH, GQ, GP, GM, HALF, NSPLIT, BS, F32_DOT)
        if PHASE == 0 or PHASE == 3:  # o + residual
            _gemv_phase(o_ptr, wo_ptr + lq * (H * NH * D // 8), so_ptr + lq * (NH * D // G * H),
                        mo_ptr + lq * (NH * D // G * H), x_ptr, x_ptr, bar_ptr, eps, pid, n_prog, PHASE == 0,
                        H, NH * D, G, False, False, True, BN3, BK3, PIPE)
        if PHASE == 0 or PHASE == 4:  # norm + gate_up + SwiGLU
            _gemv_phase(x_ptr, wg_ptr + lq * (2 * I * H // 8), sg_ptr + lq * (H // G * 2 * I),
                        mg_ptr + lq * (H // G * 2 * I), act_ptr, ln2_ptr + lq * H, bar_ptr, eps, pid, n_prog,
                        PHASE == 0, 2 * I, H, G, True, True, False, BN4, BK4, PIPE)
        if PHASE == 0 or PHASE == 5:  # down + residual
            _gemv_phase(act_ptr, wd_ptr + lq * (H * I // 8), sd_ptr + lq * (I // G * H), md_ptr + lq * (I // G * H),
                        x_ptr, x_ptr, bar_ptr, eps, pid, n_prog, PHASE == 0, H, I, G, False, False, True, BN5,
                        BK5, PIPE)


# ----------------------------------------------------------------------------------------------------------
# launch

_STATE: dict = {}  # device -> (barrier counter int64 [1], merge tickets int32 [64]); zero between launches


def _counters(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key = str(device)
    if key not in _STATE:
        _STATE[key] = (torch.zeros(1, dtype=torch.int64, device=device),
                       torch.zeros(64, dtype=torch.int32, device=device))
    return _STATE[key]


def sm_count(device: torch.device) -> int:
    if interpreting() or torch.device(device).type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def num_splits(max_len: int, kv_heads: int, n_prog: int, group: int, head_dim: int) -> int:
    """Attention splits a kv head (a power of 2): about one block of BS positions each at max_len, at most one
    program each, and few enough that the merging program holds every partial of its group in registers."""
    gm = triton.next_power_of_2(group)
    want = min(triton.next_power_of_2(triton.cdiv(max_len, BS)), max(1, n_prog // kv_heads),
               max(1, MAX_MERGE // (gm * head_dim)))
    return 1 << (want.bit_length() - 1)


def _tile(n: int, k: int, n_prog: int, words: int, swiglu: bool = False) -> tuple[int, int]:
    """(BN, BK) of a GEMV phase: about one tile of rows a program, chunks of at most `words` int4 words (more
    registers a thread spilled: 2048 words at 8 warps measured ~3 us a chunk against ~0.2 us for 1024)."""
    bn = max(8 if swiglu else 4, min(64, triton.next_power_of_2(triton.cdiv(n, n_prog))))
    bk = min(max(256, triton.next_power_of_2(k)), max(64, words * 8 // bn))
    return bn, bk


class Scratch:
    """The step's intermediate vectors, allocated once per (model, device, dtype)."""

    def __init__(self, w: DecodeLayers, inter: int, nsplit_max: int, device: torch.device, dtype: torch.dtype):
        nh, kvh, d = w.num_heads, w.num_kv_heads, w.head_dim
        self.qkv = torch.empty((nh + 2 * kvh) * d, dtype=dtype, device=device)
        self.o = torch.empty(nh * d, dtype=dtype, device=device)
        self.act = torch.empty(inter, dtype=dtype, device=device)
        self.part = torch.empty(nh * nsplit_max * d, dtype=torch.float32, device=device)
        self.lse = torch.empty(nh * nsplit_max, dtype=torch.float32, device=device)


def decode_layers(x: torch.Tensor, w: DecodeLayers, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                  v_cache: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, max_len: int | None = None,
                  n_prog: int | None = None, num_warps: int = 8, words: int | None = None, tiles: dict | None = None,
                  phases: tuple[int, ...] | None = None) -> torch.Tensor:
    """The kernel version of `decode_layers_ref`; x [1, H] is updated in place and returned. max_len: a bound on
    pos + 1 (picks the number of attention splits, never the result). n_prog: programs (default: one per SM;
    never more, or the barrier deadlocks)."""
    h_dim = x.shape[-1]
    nh, kvh, d = w.num_heads, w.num_kv_heads, w.head_dim
    n_layers = w.num_layers
    inter = w.down.shape[1]
    assert x.shape == (1, h_dim) and x.is_contiguous() and d % 2 == 0 and (d // 2) & (d // 2 - 1) == 0
    assert k_cache.shape == v_cache.shape and k_cache.stride() == v_cache.stride() and k_cache.stride(4) == 1
    assert k_cache.shape[0] == n_layers and cos.stride(-1) == 1 and sin.stride(-1) == 1
    assert rows.dtype == pos.dtype == torch.int32 and rows.numel() == pos.numel() == 1
    sms = sm_count(x.device)
    n_prog = min(n_prog or sms, sms)
    g = nh // kvh
    cap = k_cache.shape[3]
    nsplit = num_splits(min(max_len or cap, cap), kvh, n_prog, g, d)
    key = (str(x.device), x.dtype)
    if key not in w.scratch:  # sized for the most splits any bound can ask for: one set serves every graph
        w.scratch[key] = Scratch(w, inter, num_splits(1 << 30, kvh, sms, g, d), x.device, x.dtype)
    scratch = w.scratch[key]
    bar, cnt = _counters(x.device)
    words = words or 128 * num_warps  # 4 words a thread
    bn1, bk1 = _tile((nh + 2 * kvh) * d, h_dim, n_prog, words)
    bn3, bk3 = _tile(h_dim, nh * d, n_prog, words)
    bn4, bk4 = _tile(2 * inter, h_dim, n_prog, words, swiglu=True)
    bn5, bk5 = _tile(h_dim, inter, n_prog, words)
    f32 = interpreting() or x.dtype == torch.float32
    args = (x, scratch.qkv, scratch.o, scratch.act, scratch.part, scratch.lse, cnt, bar, w.ln1, w.ln2,
            w.qkv.qweight, w.qkv.scales, w.qkv.mins, w.o.qweight, w.o.scales, w.o.mins,
            w.gate_up.qweight, w.gate_up.scales, w.gate_up.mins, w.down.qweight, w.down.scales, w.down.mins,
            k_cache, v_cache, cos, sin, rows, pos)
    meta = dict(H=h_dim, I=inter, NH=nh, KVH=kvh, HALF=d // 2, GQ=g, GP=max(16, triton.next_power_of_2(g)),
                GM=triton.next_power_of_2(g), G=w.qkv.group_size, NSPLIT=nsplit, BS=BS, BN1=bn1, BK1=bk1,
                BN3=bn3, BK3=bk3, BN4=bn4, BK4=bk4, BN5=bn5, BK5=bk5, F32_DOT=f32, PIPE=True, num_warps=num_warps)
    strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), k_cache.stride(3))
    meta.update(tiles or {})
    qk_scale = w.scale * 1.4426950408889634
    if phases is not None:  # measurement: the given phases of every layer, one launch each, no barrier
        for layer in range(n_layers):
            for phase in phases:
                _decode_layers_kernel[(n_prog,)](*args, layer, 1, w.eps, qk_scale, *strides, PHASE=phase, **meta)
    elif interpreting():  # programs run one after another: a barrier would never release
        for layer in range(n_layers):
            for phase in range(1, 6):
                _decode_layers_kernel[(n_prog,)](*args, layer, 1, w.eps, qk_scale, *strides, PHASE=phase, **meta)
    else:
        _decode_layers_kernel[(n_prog,)](*args, 0, n_layers, w.eps, qk_scale, *strides, PHASE=0, **meta)
    return x
