"""The split-K M = 1 GEMV (`_gemv2_kernel`, the 8B layers: N K >= GEMV2_MIN_NK), ~4 SASS instructions a code;
docs/kernels.md "The split-K M = 1 GEMV". Reference: `layout.int4_matmul_ref`. Launcher `_gemv2`.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from engine.kernels import pdl
from engine.kernels.int4 import layout
from engine.kernels.int4.layout import PackedInt4, _column, _counters, _epilogue, _rms_rstd, interpreting


# ---- the M = 1 GEMV, second form (`_gemv2_kernel`, the 8B layers): fewer instructions a code, split-K ------
# Why: `_gemv_kernel` runs ~6.6 SASS instructions a code (sm_90, BN=8, BK=1024: 421 a loop trip for 64 codes:
# addresses recomputed per word, scales converted and applied per word and row, x normalised per load); the 8B
# layers sat at 25-37% of the copy bandwidth. Here (~4 a code) a thread holds one word column (kk) of all
# BN rows, so every x value it loads (and the norm and the sums over it) serves BN rows; per word and row the
# work is the unpack, 8 FMAs and 2 FMAs for the scale and the min:
#   w x = s sum(c x) + m sum(x), and with v = 1 + c/16 (`_magic_const`) sum(c x) = 16 (sum(x v) - sum(x)), so
#   acc += s (part - OFF) + m X with part = sum_j x_j v_j started at -OFF (no extra op), OFF and X = sum(x) / 16
#   made once per word column for all rows; the row's result is 16 acc.
# PAIRS (bf16 x): one shift serves two nibbles: nibble 2p + 1 lands at bits 19..22 (v = 1 + c/16) and nibble
# 2p at bits 15..18 (v = 1 + c/256, its x scaled by 16, exactly, so both carry x c / 16): 1.5 integer ops a code
# instead of 2, at ~16x the rounding of the offset term (~1e-6 relative, far under bf16's output rounding); fp32
# x keeps the exact form. NORM: x times the norm weight in the loop, 1/rms applied once to the row sums.
# SPLIT programs share a row tile's K range; the last to finish (an atomic count) sums the fp32 partials and
# runs the epilogue (as `_mma_kernel`).


@triton.jit
def _gemv2_load(q_ptr, s_ptr, m_ptr, r4, kk, kend, N, K, G: tl.constexpr, EVEN: tl.constexpr):
    """Words [BN/4, BKK, 4] (row quads r4, word columns kk < kend) and their scales and mins, bf16 as stored.
    EVEN: every tile is whole (no masks: no predicates, no zero fills)."""
    i4 = tl.arange(0, 4)[None, None, :]
    qp = q_ptr + r4[:, None, None] * (K // 8 * 4) + kk[None, :, None] * 4 + i4
    rows = r4[:, None, None] * 4 + i4
    sidx = (kk * 8 // G)[None, :, None] * N + rows
    if EVEN:
        q = tl.load(qp)
        s = tl.load(s_ptr + sidx)
        m = tl.load(m_ptr + sidx)
    else:
        kmask = (kk < kend)[None, :, None]
        q = tl.load(qp, mask=kmask & (r4 < tl.cdiv(N, 4))[:, None, None], other=0)
        s = tl.load(s_ptr + sidx, mask=kmask & (rows < N), other=0.0)
        m = tl.load(m_ptr + sidx, mask=kmask & (rows < N), other=0.0)
    return q, s, m


@triton.jit
def _gemv2_x(xp, np_, kmask, J: tl.constexpr, G: tl.constexpr, NORM: tl.constexpr, EVEN: tl.constexpr):
    """x (times the norm weight) at the input column of nibble J, fp32 [BKK]; xp, np_ point at nibble 0's
    columns (nibble J is G/8 J further: a constant offset, no address math per load)."""
    if EVEN:
        xj = tl.load(xp + J * (G // 8)).to(tl.float32)
        if NORM:
            xj = xj * tl.load(np_ + J * (G // 8)).to(tl.float32)
    else:
        xj = tl.load(xp + J * (G // 8), mask=kmask, other=0.0).to(tl.float32)
        if NORM:
            xj = xj * tl.load(np_ + J * (G // 8), mask=kmask, other=0.0).to(tl.float32)
    return xj


@triton.jit
def _gemv2_pair(q, one, SHIFT: tl.constexpr):
    """Nibbles 2p + 1 and 2p of words q as floats 1 + c/16 and 1 + c/256 (SHIFT = 15 - 8p: one shift, two LOP3).
    `one` is the bits of 1.0 (0x3F800000) as a kernel argument: a literal makes ptxas rebuild the second LOP3
    constant in a register before nearly every use (~100 extra moves a loop trip at BN = 16)."""
    if SHIFT >= 0:
        t = q << SHIFT
    else:
        t = q >> (-SHIFT)
    hi = ((t & 0x780000) | one).to(tl.float32, bitcast=True)
    lo = ((t & 0x78000) | one).to(tl.float32, bitcast=True)
    return hi, lo


@triton.jit
def _gemv2_nib(q, one, J: tl.constexpr):
    """`_magic_const` with the 1.0 bits from a kernel argument (see `_gemv2_pair`)."""
    if 4 * J <= 19:
        t = q << (19 - 4 * J)
    else:
        t = q >> (4 * J - 19)
    return ((t & 0x780000) | one).to(tl.float32, bitcast=True)


@triton.jit
def _gemv2_tile(acc, q, s, m, kk, one, x_ptr, nw_ptr, K, G: tl.constexpr, NORM: tl.constexpr,
                PAIRS: tl.constexpr, EVEN: tl.constexpr):
    """acc [BN/4, BKK, 4] += one tile's words times x (comment above `_gemv2_load`: units of 1/16)."""
    km = kk < K // 8
    col = _column(kk, 0, G)
    xp, np_ = x_ptr + col, nw_ptr + col
    x0, x1 = _gemv2_x(xp, np_, km, 0, G, NORM, EVEN), _gemv2_x(xp, np_, km, 1, G, NORM, EVEN)
    x2, x3 = _gemv2_x(xp, np_, km, 2, G, NORM, EVEN), _gemv2_x(xp, np_, km, 3, G, NORM, EVEN)
    x4, x5 = _gemv2_x(xp, np_, km, 4, G, NORM, EVEN), _gemv2_x(xp, np_, km, 5, G, NORM, EVEN)
    x6, x7 = _gemv2_x(xp, np_, km, 6, G, NORM, EVEN), _gemv2_x(xp, np_, km, 7, G, NORM, EVEN)
    xsum = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
    if PAIRS:  # even nibbles sit 4 bits lower: their x is scaled by 16 (exact) to keep the same units
        x0, x2, x4, x6 = x0 * 16.0, x2 * 16.0, x4 * 16.0, x6 * 16.0
        off = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
        part = tl.zeros_like(acc) - off[None, :, None]
        h, lo = _gemv2_pair(q, one, 15)
        part += x1[None, :, None] * h
        part += x0[None, :, None] * lo
        h, lo = _gemv2_pair(q, one, 7)
        part += x3[None, :, None] * h
        part += x2[None, :, None] * lo
        h, lo = _gemv2_pair(q, one, -1)
        part += x5[None, :, None] * h
        part += x4[None, :, None] * lo
        h, lo = _gemv2_pair(q, one, -9)
        part += x7[None, :, None] * h
        part += x6[None, :, None] * lo
    else:
        part = tl.zeros_like(acc) - xsum[None, :, None]
        part += x0[None, :, None] * _gemv2_nib(q, one, 0)
        part += x1[None, :, None] * _gemv2_nib(q, one, 1)
        part += x2[None, :, None] * _gemv2_nib(q, one, 2)
        part += x3[None, :, None] * _gemv2_nib(q, one, 3)
        part += x4[None, :, None] * _gemv2_nib(q, one, 4)
        part += x5[None, :, None] * _gemv2_nib(q, one, 5)
        part += x6[None, :, None] * _gemv2_nib(q, one, 6)
        part += x7[None, :, None] * _gemv2_nib(q, one, 7)
    return acc + part * s.to(tl.float32) + (xsum * 0.0625)[None, :, None] * m.to(tl.float32)


def _gemv2_configs():
    # H200 sweep (2026-11-23, 8B shapes, bf16 x, CUDA graph of back-to-back calls with PDL): BN=16 BK=512 2 warps
    # won gate_up (no split) and o/down (SPLIT=4), BN=8 BK=1024 4 warps with a 64-register cap won qkv. Register
    # prefetch (PREFETCH), cp.async pipelining (num_stages=3) and tighter register caps were all slower there
    # (docs/kernels.md), so they are not in the search.
    if interpreting():
        return [triton.Config({"BN": 8, "BK": 256, "SPLIT": 2}, num_warps=1)]
    return [triton.Config({"BN": bn, "BK": bk, "SPLIT": sp}, num_warps=w, num_stages=1, maxnreg=r)
            for bn, bk, w, r in [(8, 1024, 4, 64), (16, 512, 2, None), (16, 1024, 4, None), (8, 512, 2, 64),
                                 (8, 256, 1, None), (4, 256, 1, None)]
            for sp in (1, 2, 4)]


@triton.autotune(configs=_gemv2_configs(), key=["N", "K", "G", "SWIGLU", "NORM", "PAIRS"])
@triton.heuristics({"EVEN": lambda a: a["N"] % a["BN"] == 0 and (a["K"] // 8) % (a["SPLIT"] * a["BK"] // 8) == 0})
@triton.jit
def _gemv2_kernel(x_ptr, q_ptr, s_ptr, m_ptr, out_ptr, res_ptr, nw_ptr, ws_ptr, cnt_ptr, eps, one, N, K,
                  G: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr, NORM: tl.constexpr,
                  PAIRS: tl.constexpr, PDL: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT: tl.constexpr,
                  EVEN: tl.constexpr):
    # x [1, K] -> out [1, BN rows] over this program's share of K (the comment above `_gemv2_load`).
    # PDL: the first tile's weights are loaded before the wait; x, the norm weight, partials and counts after.
    BKK: tl.constexpr = BK // 8
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    r4 = pid_n * (BN // 4) + tl.arange(0, BN // 4)
    words = K // 8
    per = tl.cdiv(tl.cdiv(words, SPLIT), BKK) * BKK  # word columns a split covers (whole tiles)
    k_lo = pid_k * per
    k_hi = tl.minimum(k_lo + per, words)
    kk = k_lo + tl.arange(0, BKK)
    q, s, m = _gemv2_load(q_ptr, s_ptr, m_ptr, r4, kk, k_hi, N, K, G, EVEN)
    pdl.wait(PDL)
    acc = _gemv2_tile(tl.zeros((BN // 4, BKK, 4), tl.float32), q, s, m, kk, one, x_ptr, nw_ptr, K, G, NORM, PAIRS,
                      EVEN)
    for k0 in range(k_lo + BKK, k_hi, BKK):
        kk = k0 + tl.arange(0, BKK)
        q, s, m = _gemv2_load(q_ptr, s_ptr, m_ptr, r4, kk, k_hi, N, K, G, EVEN)
        acc = _gemv2_tile(acc, q, s, m, kk, one, x_ptr, nw_ptr, K, G, NORM, PAIRS, EVEN)
    pdl.launch_dependents(PDL)
    _gemv2_finish(acc, pid_n, pid_k, x_ptr, out_ptr, res_ptr, ws_ptr, cnt_ptr, eps, N, K, SWIGLU, RESIDUAL, NORM, BN,
                  SPLIT)


@triton.jit
def _gemv2_finish(acc, pid_n, pid_k, x_ptr, out_ptr, res_ptr, ws_ptr, cnt_ptr, eps, N, K, SWIGLU: tl.constexpr,
                  RESIDUAL: tl.constexpr, NORM: tl.constexpr, BN: tl.constexpr, SPLIT: tl.constexpr):
    """A program's sums over its share of K -> the row results (x 16, 1/rms) -> split-K reduce -> epilogue."""
    out = tl.reshape(tl.sum(acc, axis=1), (1, BN)) * 16.0
    if NORM:
        out *= tl.sum(_rms_rstd(x_ptr, tl.arange(0, 1), 1, K, 0, eps, 1, 1024), axis=0)
    rn = pid_n * BN + tl.arange(0, BN)
    if SPLIT > 1:
        tl.store(ws_ptr + pid_k * N + rn[None, :], out, mask=(rn < N)[None, :])
        tl.debug_barrier()  # every thread's partial is written before the count says so
        if tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel", scope="gpu") == SPLIT - 1:  # the last of the SPLIT
            out = tl.zeros((1, BN), tl.float32)
            for i in range(SPLIT):
                out += tl.load(ws_ptr + i * N + rn[None, :], mask=(rn < N)[None, :], other=0.0,
                               cache_modifier=".cg")
            tl.store(cnt_ptr + pid_n, 0)  # the count is ready for the next call (graph replays included)
            _epilogue(out, tl.arange(0, 1), pid_n * BN, 1, N, out_ptr, res_ptr, 0, 0, 1, BN, SWIGLU, RESIDUAL)
    else:
        _epilogue(out, tl.arange(0, 1), pid_n * BN, 1, N, out_ptr, res_ptr, 0, 0, 1, BN, SWIGLU, RESIDUAL)


_GEMV2_SCRATCH: dict = {}


def _gemv2_scratch(device: torch.device, n: int, split: int) -> torch.Tensor:
    """fp32 partials [split, n] of the split-K GEMV (every program writes its slice before it is read)."""
    ws = _GEMV2_SCRATCH.get(device)
    if ws is None or ws.numel() < split * n:
        ws = _GEMV2_SCRATCH[device] = torch.empty(max(split * n, 1 << 17), dtype=torch.float32, device=device)
    return ws


# The 8B layers' configs from the H200 sweep (graph of back-to-back calls with PDL, bf16 x, 2026-11-23), used on
# sm_90 instead of the autotuner: it times single cold launches (do_bench), and its pick for qkv ran 10.9 us in
# the graph where this one runs 8.4. (N, K, G) -> launch meta; other shapes are autotuned.
@functools.lru_cache(maxsize=None)
def _sm90(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) == (9, 0)


_GEMV2_TUNED = {
    (4608, 4096, 128): dict(BN=8, BK=1024, SPLIT=1, num_warps=4, maxnreg=64),  # qkv
    (4096, 4096, 128): dict(BN=16, BK=512, SPLIT=4, num_warps=2),  # o
    (32768, 4096, 128): dict(BN=16, BK=512, SPLIT=1, num_warps=2),  # gate_up
    (4096, 16384, 128): dict(BN=16, BK=512, SPLIT=4, num_warps=2),  # down
}


def _gemv2(x: torch.Tensor, pw: PackedInt4, out: torch.Tensor, res: torch.Tensor | None, swiglu: bool,
           norm: tuple[torch.Tensor, float] | None, **meta) -> None:
    """Launch `_gemv2_kernel` for x [1, K] (meta gives BN, BK, SPLIT, num_warps; else the sweep's config for an
    8B shape on sm_90, else the autotuner's)."""
    n, k = pw.shape
    if not meta and _sm90(x.device):
        meta = dict(_GEMV2_TUNED.get((n, k, pw.group_size), {}))
    on = layout.PDL_GEMV and pdl.enabled(x.device)
    cnt = _counters(x.device)
    assert triton.cdiv(n, 4) <= cnt.numel()
    ws = _gemv2_scratch(x.device, n, 8)
    grid = lambda meta: (triton.cdiv(n, meta["BN"]), meta["SPLIT"])  # noqa: E731
    fn = _gemv2_kernel.fn if meta else _gemv2_kernel
    fn[grid](x, pw.qweight, pw.scales, pw.mins, out, out if res is None else res, x if norm is None else norm[0],
             ws, cnt, 0.0 if norm is None else norm[1], 0x3F800000, n, k, G=pw.group_size, SWIGLU=swiglu,
             RESIDUAL=res is not None, NORM=norm is not None, PAIRS=x.dtype != torch.float32, PDL=on, **meta,
             **pdl.launch_kwargs(on))
