"""w4a16 int4 matmul on the engine's packed int4 weights, beside its PyTorch reference `int4_matmul_ref`.

Kernel layout (`repack_int4`, once at load time; see docs/kernels.md):
    qweight int32 [ceil(N/4), K // 8, 4]  word kk of rows 4r..4r+3 side by side; a word is 8 codes of one row
                                          and one group g: nibble j of the group's word w is column
                                          g G + j G/8 + w (so nibble j of 16 neighbouring words = 16
                                          neighbouring columns)
    scales, mins [K // G, N]              transposed so that 4 neighbouring rows' values are one vector load;
                                          w = code * scale + min
    perm int64 [K] or None                act-order: x is gathered (x[..., perm]) before the kernel

Paths, by M (rows of x):
- M = 1 (decode), and M <= GEMV_MAX_M on a small layer (speculative verify on smollm2 / 0.5B; `use_gemv`):
  `_gemv_kernel` / `_gemv_rows_kernel`, FMA; M = 1 on a large layer (N K >= GEMV2_MIN_NK: the 8B layers) takes
  `_gemv2_kernel`, the split-K form with ~4 instead of ~6.6 instructions a code (its comment, docs/kernels.md). A 16-byte load carries one word of 4 rows, so each thread reuses
  every x value it loads 4 times and reduces over K inside itself; with M rows each unpacked code feeds M FMAs.
- otherwise up to DEQUANT_MIN_M (batched decode, verify on large layers): `_mma_kernel`, tensor cores with the
  weight as the MMA's A operand ("swap AB": out^T = W x^T, so x's few rows are the MMA's N side, padded to 16),
  unpacked in registers by PTX (PRMT + LOP3, ~1 instruction a code) and read once for all M rows: its time is
  flat in M up to 16. K may be split over programs; the last to finish sums the partials (module `_counters`).
- M >= DEQUANT_MIN_M (prefill): the layer is dequantized once into a scratch and multiplied by cuBLAS, far
  ahead of a Triton dequant-GEMM at that size.

Dequant trick: the bits (code << 19) | 0x3F800000 are the float 1 + code/16, exactly: two integer ops and no
int->float conversion (a slow instruction). So w = code * s + m = (16 s) * val + (m - 16 s), and the GEMV
applies the scale once per 8-code word: acc += (sum_j x_j val_j) * 16s + (sum_j x_j) * (m - 16 s). The MMA
kernel does the same in bf16: 0x4300 | code is the bf16 128 + code, exactly, and with one group per K step
(G = 128) the scale and min apply to the dot's result: s dot(v, x) + (m - 128 s) sum(x).
Optional epilogues: `residual` (out += residual) and `swiglu` (rows interleaved gate0, up0, gate1, up1, ...
by `interleave_rows`; out = silu(gate) * up, N // 2 columns). `out_dtype` lets a decode step keep fp32
activations between kernels (no bf16 round trip, no conversion in the next GEMV's loop).
PDL (engine/kernels/pdl.py): every kernel loads its first weight tile before `pdl.wait` and x, residual and
norm input after it, and lets the next kernel launch once its weights are streamed; on by default for the M = 1
GEMV (a decode step's chain: 2.9 -> 2.3-2.5 us a call on smollm2), off for M > 1 (`PDL_SMALL_M`: measured slower).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from engine.kernels import pdl
from engine.quant import Int4Weight, dequantize, pack_int4, unpack_int4

DEQUANT_MIN_M = 256  # from this many rows of x on, dequantize + cuBLAS beats the Triton GEMM
GEMV_MAX_M = 8  # up to this many rows, a small layer takes the FMA GEMV (`use_gemv`)
GEMV_MAX_NK = 1 << 20  # "small": N * K up to this (smollm2's qkv, o, down); larger layers take the MMA kernel
# M = 1 from this N * K on (the 8B layers) takes the split-K GEMV `_gemv2_kernel`; below it the first form stays
# (H200, graph of back-to-back calls with PDL: at 0.5B / smollm2 sizes the time is launch and ramp, and the first
# form was as fast or faster: 0.5B down 3.4 vs 4.8 us, smollm2 o 1.35 vs 1.68, down 1.9 vs 2.4)
GEMV2_MIN_NK = 1 << 24


def use_gemv(m: int, n: int, k: int) -> bool:
    """Whether M rows of x against an N x K weight take the FMA GEMV rather than the tensor-core kernel. M = 1
    always (8.0 vs 12.1 us on the 8B qkv layer: the MMA kernel has a ~11 us floor); a few rows on a small layer
    too, where the time is latency and the GEMV's is the shortest (docs/kernels.md, "Small M")."""
    return m == 1 or (m <= GEMV_MAX_M and n * k <= GEMV_MAX_NK)


@dataclass
class PackedInt4:
    """An int4 weight in the kernel layout (module docstring)."""

    qweight: torch.Tensor  # int32 [ceil(N / 4), K // 8, 4]
    scales: torch.Tensor  # [K // G, N]
    mins: torch.Tensor  # [K // G, N]
    group_size: int
    perm: torch.Tensor | None = None  # int64 [K]

    @property
    def shape(self) -> tuple[int, int]:
        return self.scales.shape[1], self.qweight.shape[1] * 8


def _regroup(codes: torch.Tensor, group: int, forward: bool) -> torch.Tensor:
    """Codes [N, K] <-> kernel order: within each group, word w holds columns w, w + G/8, ..., w + 7 G/8."""
    n, k = codes.shape
    shape = (n, k // group, 8, group // 8) if forward else (n, k // group, group // 8, 8)
    return codes.view(shape).transpose(-1, -2).reshape(n, k)


def repack_int4(w: Int4Weight) -> PackedInt4:
    """Int4Weight -> PackedInt4 (kernel layout; done once at load time, costs one copy of the codes)."""
    n, k = w.shape
    assert k % 8 == 0 and k % w.group_size == 0 and w.group_size in (32, 64, 128), (k, w.group_size)
    codes = _regroup(unpack_int4(w.packed), w.group_size, forward=True)
    words = pack_int4(codes).view(torch.int32)  # [N, K // 8]; all 8 codes of a word share one group
    pad = (-n) % 4
    if pad:
        words = torch.cat([words, words.new_zeros(pad, k // 8)])
    qweight = words.view(-1, 4, k // 8).transpose(1, 2).contiguous()  # [N / 4, K // 8, 4]
    return PackedInt4(qweight, w.scales.t().contiguous(), w.mins.t().contiguous(), w.group_size, w.perm)


def interleave_rows(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """[I, ...] + [I, ...] -> [2I, ...] with rows gate0, up0, gate1, up1, ... (the swiglu epilogue's order)."""
    return torch.stack([gate, up], dim=1).reshape(2 * gate.shape[0], *gate.shape[1:])


def unpack_codes(pw: PackedInt4) -> Int4Weight:
    """PackedInt4 -> Int4Weight (the reference's view of the same weight)."""
    n, k = pw.shape
    words = pw.qweight.transpose(1, 2).reshape(-1, k // 8)[:n].contiguous()
    codes = _regroup(unpack_int4(words.view(torch.uint8)), pw.group_size, forward=False)
    return Int4Weight(pack_int4(codes), pw.scales.t(), pw.mins.t(), pw.group_size, pw.perm)


def int4_matmul_ref(x: torch.Tensor, pw: PackedInt4, residual: torch.Tensor | None = None,
                    swiglu: bool = False) -> torch.Tensor:
    """Reference: x [M, K] -> [M, N] (or [M, N // 2] with swiglu), in x's dtype."""
    w = unpack_codes(pw)
    xp = x if w.perm is None else x[..., w.perm]
    out = xp.float() @ dequantize(w, torch.float32).t()
    if swiglu:
        out = F.silu(out[:, 0::2]) * out[:, 1::2]
    if residual is not None:
        out = out + residual.float()
    return out.to(x.dtype)


@triton.jit
def _magic(q, shift):
    """Nibble at bit `shift` of int32 words -> the float 1 + code / 16 (exact): bits 19..22 of 0x3F800000."""
    return ((((q >> shift) & 0xF) << 19) | 0x3F800000).to(tl.float32, bitcast=True)


@triton.jit
def _magic_const(q, J: tl.constexpr):
    """_magic for a compile-time nibble J: one shift + one and-or (LOP3) per code instead of four ops."""
    if 4 * J <= 19:
        t = q << (19 - 4 * J)
    else:
        t = q >> (4 * J - 19)
    return ((t & 0x780000) | 0x3F800000).to(tl.float32, bitcast=True)


@triton.jit
def _column(kk, j, G: tl.constexpr):
    """Input column of nibble j of word kk (kernel order, see `_regroup`)."""
    return kk // (G // 8) * G + j * (G // 8) + kk % (G // 8)


@triton.jit
def _load_words(q_ptr, s_ptr, m_ptr, rn, k0, N, K, G: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Words [BK / 8, BN] of rows rn from column k0, and each word's 16 s and m - 16 s (fp32 [BK / 8, BN])."""
    rk8 = k0 // 8 + tl.arange(0, BK // 8)
    mask = (rk8 < K // 8)[:, None] & (rn < N)[None, :]
    q = tl.load(q_ptr + (rn // 4 * (K // 8) * 4 + rn % 4)[None, :] + rk8[:, None] * 4, mask=mask, other=0)
    grp = rk8 * 8 // G
    s = tl.load(s_ptr + grp[:, None] * N + rn[None, :], mask=mask, other=0.0).to(tl.float32) * 16.0
    mn = tl.load(m_ptr + grp[:, None] * N + rn[None, :], mask=mask, other=0.0).to(tl.float32) - s
    return q, s, mn


@triton.jit
def _dequant_tile(q_ptr, s_ptr, m_ptr, rn, k0, N, K, G: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """W^T tile [BK, BN] in fp32; entries past K or N are finite (the caller masks x or the store)."""
    q, s, mn = _load_words(q_ptr, s_ptr, m_ptr, rn, k0, N, K, G, BN, BK)
    val = _magic(q[:, None, :], (tl.arange(0, 8) * 4)[None, :, None])  # [BK / 8, 8, BN]
    return tl.reshape(val * s[:, None, :] + mn[:, None, :], (BK, BN))  # row r <-> column _tile_columns(r)


@triton.jit
def _tile_columns(k0, BK: tl.constexpr, G: tl.constexpr):
    """Input columns of the rows of a `_dequant_tile` (word-major, then nibble)."""
    r = tl.arange(0, BK)
    return _column(k0 // 8 + r // 8, r % 8, G)


@triton.jit
def _epilogue(out, rm, n0, M, N, out_ptr, res_ptr, stride_om, stride_rm,
              BM: tl.constexpr, BN: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr):
    """out [BM, BN] fp32 (weight rows n0..n0+BN) -> swiglu / residual -> store in out_ptr's dtype."""
    if SWIGLU:  # rows come as (gate, up) pairs: columns 2j, 2j+1 -> output column j
        g, u = tl.split(tl.reshape(out, (BM, BN // 2, 2)))
        out = g / (1.0 + tl.exp(-g)) * u
        rn = n0 // 2 + tl.arange(0, BN // 2)
        N = N // 2
    else:
        rn = n0 + tl.arange(0, BN)
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    if RESIDUAL:
        out += tl.load(res_ptr + rm[:, None] * stride_rm + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1 (CPU runs of the kernels)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _gemv_configs():
    # which layout Triton gives the x loads (and so whether they are shuffled through shared memory) depends on
    # the tile, so both x-load forms are in the search; the autotuner keeps the fastest on the device
    if interpreting():  # the autotuner needs a device to time configs: keep one (tests run the other directly)
        return [triton.Config({"BN": 4, "BK": 256, "X_WIDE": False, "PREFETCH": False}, num_warps=4)]
    return [triton.Config({"BN": bn, "BK": bk, "X_WIDE": xw, "PREFETCH": False}, num_warps=w, num_stages=st)
            for bn, bk, w, st in [(4, 1024, 4, 2), (4, 2048, 4, 2), (8, 512, 4, 2), (4, 512, 2, 2),
                                  (8, 1024, 4, 2), (4, 4096, 8, 1), (4, 256, 1, 2), (16, 256, 4, 2),
                                  (8, 4096, 8, 1), (8, 2048, 4, 1), (16, 1024, 4, 1)]
            for xw in (False, True)] + [
        # register caps: more resident threads keep more weight loads in flight (the GEMV is latency-bound);
        # PREFETCH: the next tile's loads are issued before this one's math (twice the loads in flight)
        triton.Config({"BN": bn, "BK": bk, "X_WIDE": False, "PREFETCH": pf}, num_warps=w, num_stages=1, maxnreg=r)
        for bn, bk, w, r, pf in [(4, 4096, 8, 64, False), (4, 2048, 4, 64, False), (4, 4096, 8, 96, False),
                                 (8, 1024, 4, 64, False), (8, 1024, 4, 96, True), (4, 1024, 4, 64, True),
                                 (4, 2048, 8, 96, True), (8, 512, 4, 128, True)]]


# PDL (engine/kernels/pdl.py) for the M = 1 GEMV and for the small-M kernels. Each kernel lets its dependents
# launch once its weights are streamed (a trigger at the start let the next kernel's waiting programs take SM
# slots this one still needed: slower than no PDL). H200, smollm2's 120-call chain in a CUDA graph, 2026-11-23:
# M = 1 2.96 -> 2.47 us a call; M = 8 (GEMV over rows) 8.72 -> 9.30, so the small-M kernels run without it.
PDL_GEMV = True
PDL_SMALL_M = False


@triton.jit
def _rms_rstd(x_ptr, rm, M, K, stride_xm, eps, BM: tl.constexpr, BK: tl.constexpr):
    """1 / rms of rows rm of x [M, K] (fp32 [BM])."""
    ss = tl.zeros((BM, BK), tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        xv = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=(rm < M)[:, None] & (rk < K)[None, :],
                     other=0.0).to(tl.float32)
        ss += xv * xv
    return tl.rsqrt(tl.sum(ss, axis=1) / K + eps)


@triton.jit
def _gemv_tile(acc, q, s, mn, k0, x_ptr, nw_ptr, rstd, rn, K, x_stride, G: tl.constexpr, NORM: tl.constexpr,
               X_WIDE: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """acc [BK / 8, BN] += the words [BK / 8, BN] from column k0 times x's one row."""
    kk = (k0 // 8 + tl.arange(0, BK // 8))[:, None]  # [BK / 8, 1]
    part = tl.zeros((BK // 8, BN), tl.float32)
    xsum = tl.zeros((BK // 8, BN if X_WIDE else 1), tl.float32)
    for j in tl.static_range(8):
        col = _column(kk, j, G)
        xo = col * x_stride
        if X_WIDE:  # the same x value loaded for each of the BN rows: redundant, but never reshuffled
            xo = xo + rn[None, :] * 0
        xj = tl.load(x_ptr + xo, mask=kk < K // 8, other=0.0).to(tl.float32)
        if NORM:
            xj = xj * rstd * tl.load(nw_ptr + col, mask=kk < K // 8, other=0.0).to(tl.float32)
        xsum += xj
        part += xj * _magic_const(q, j)
    return acc + part * s + xsum * mn  # scale once per word


@triton.autotune(configs=_gemv_configs(), key=["N", "K", "G", "SWIGLU", "NORM"])
@triton.jit(do_not_specialize=["x_stride"])
def _gemv_kernel(x_ptr, q_ptr, s_ptr, m_ptr, out_ptr, res_ptr, nw_ptr, eps, N, K, x_stride,
                 G: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr, NORM: tl.constexpr,
                 PDL: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, X_WIDE: tl.constexpr,
                 PREFETCH: tl.constexpr):
    # x [1, K] -> out [1, BN rows]. A thread owns whole words of 4 rows and loads each x value it needs once
    # ([BK / 8, 1] tensors broadcast over the rows), 8 loads per word-row, coalesced since a word's nibble j
    # sits G/8 columns after nibble j-1. x_stride (always 1) is not specialised so that Triton does not
    # vectorise these loads into a layout that would need a shared-memory shuffle to broadcast.
    # NORM: x is first RMS-normalised with weight nw (the layer's input norm as a prologue: every program
    # reads all of x once for the sum of squares, cheap beside its weight rows, and the norm kernel is gone).
    # PDL: the first tile's weights are loaded before the wait (they overlap the previous kernel's tail);
    # x, the norm weight's partner and the residual only after it.
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    q, s, mn = _load_words(q_ptr, s_ptr, m_ptr, rn, 0, N, K, G, BN, BK)
    pdl.wait(PDL)
    rstd = 1.0
    if NORM:
        rstd = tl.sum(_rms_rstd(x_ptr, tl.arange(0, 1), 1, K, 0, eps, 1, BK), axis=0)
    acc = tl.zeros((BK // 8, BN), tl.float32)
    if PREFETCH:  # registers double-buffered: tile k0's loads are in flight during the math of tile k0 - BK
        for k0 in range(BK, K + BK, BK):
            qn, sn, mnn = _load_words(q_ptr, s_ptr, m_ptr, rn, k0, N, K, G, BN, BK)  # masked off past K
            acc = _gemv_tile(acc, q, s, mn, k0 - BK, x_ptr, nw_ptr, rstd, rn, K, x_stride, G, NORM, X_WIDE, BN, BK)
            q, s, mn = qn, sn, mnn
    else:
        acc = _gemv_tile(acc, q, s, mn, 0, x_ptr, nw_ptr, rstd, rn, K, x_stride, G, NORM, X_WIDE, BN, BK)
        for k0 in range(BK, K, BK):
            q, s, mn = _load_words(q_ptr, s_ptr, m_ptr, rn, k0, N, K, G, BN, BK)  # [BK / 8, BN]
            acc = _gemv_tile(acc, q, s, mn, k0, x_ptr, nw_ptr, rstd, rn, K, x_stride, G, NORM, X_WIDE, BN, BK)
    pdl.launch_dependents(PDL)
    out = tl.reshape(tl.sum(acc, axis=0), (1, BN))
    _epilogue(out, tl.arange(0, 1), tl.program_id(0) * BN, 1, N, out_ptr, res_ptr, 0, 0, 1, BN, SWIGLU, RESIDUAL)


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


def _rows_configs():
    if interpreting():
        return [triton.Config({"BN": 8, "BK": 256}, num_warps=4)]
    return [triton.Config({"BN": bn, "BK": bk}, num_warps=w)
            for bn, bk, w in [(4, 256, 2), (4, 512, 4), (8, 256, 4), (8, 512, 4), (4, 1024, 4), (16, 256, 4),
                              (8, 1024, 8), (16, 512, 8), (32, 256, 8), (4, 2048, 8)]]


def _rows_prune(configs, named_args, **kwargs):
    """Tiles whose [BM, BK / 8, BN] accumulator fits in ~32 registers a thread (larger ones spill) and no
    longer than K needs."""
    bm = kwargs.get("BM", named_args.get("BM", 1))
    bk_max = max(256, triton.next_power_of_2(named_args["K"]))  # a longer tile than K is masked-off work
    fits = [c for c in configs if bm * c.kwargs["BK"] // 8 * c.kwargs["BN"] <= 32 * 32 * c.num_warps
            and c.kwargs["BK"] <= bk_max]
    return fits or configs[:1]


@triton.autotune(configs=_rows_configs(), key=["N", "K", "BM", "G", "SWIGLU", "NORM"],
                 prune_configs_by={"early_config_prune": _rows_prune})
@triton.jit(do_not_specialize=["M"])
def _gemv_rows_kernel(x_ptr, q_ptr, s_ptr, m_ptr, out_ptr, res_ptr, nw_ptr, eps, M, N, K, stride_xm, stride_om,
                      stride_rm, G: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr,
                      NORM: tl.constexpr, PDL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # The GEMV for a few rows of x (M <= BM, small layers of speculative verification): each word is unpacked
    # once and multiplied into all BM rows by FMA ([BM, BK / 8, BN] tensors). On a small layer the time is
    # latency, not instructions, so this keeps the GEMV's ~3 us where the tensor-core kernel's pipeline fill,
    # dots and split-K reduce cost more.
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rm = tl.arange(0, BM)
    q, s, mn = _load_words(q_ptr, s_ptr, m_ptr, rn, 0, N, K, G, BN, BK)
    pdl.wait(PDL)
    rstd = tl.full((BM,), 1.0, tl.float32)
    if NORM:
        rstd = _rms_rstd(x_ptr, rm, M, K, stride_xm, eps, BM, BK)
    acc = tl.zeros((BM, BK // 8, BN), tl.float32)
    for k0 in range(0, K, BK):
        if k0 > 0:
            q, s, mn = _load_words(q_ptr, s_ptr, m_ptr, rn, k0, N, K, G, BN, BK)
        kk = (k0 // 8 + tl.arange(0, BK // 8))[None, :, None]  # [1, BK / 8, 1]
        xmask = (rm < M)[:, None, None] & (kk < K // 8)
        part = tl.zeros((BM, BK // 8, BN), tl.float32)
        xsum = tl.zeros((BM, BK // 8, 1), tl.float32)
        for j in tl.static_range(8):
            col = _column(kk, j, G)
            xj = tl.load(x_ptr + rm[:, None, None] * stride_xm + col, mask=xmask, other=0.0).to(tl.float32)
            if NORM:
                xj = xj * rstd[:, None, None] * tl.load(nw_ptr + col, mask=kk < K // 8, other=0.0).to(tl.float32)
            xsum += xj
            part += xj * _magic_const(q, j)[None, :, :]
        acc += part * s[None, :, :] + xsum * mn[None, :, :]
    pdl.launch_dependents(PDL)
    _epilogue(tl.sum(acc, axis=1), rm, tl.program_id(0) * BN, M, N, out_ptr, res_ptr, stride_om, stride_rm, BM, BN,
              SWIGLU, RESIDUAL)


_NIBBLES_ASM = tl.constexpr("""{
.reg .b32 lo, hi;
prmt.b32 lo, $8, $9, 0x5410;
prmt.b32 hi, $8, $9, 0x7632;
lop3.b32 $0, lo, 0x000F000F, 0x43004300, 0xea;
shr.u32 $1, lo, 4;
lop3.b32 $1, $1, 0x000F000F, 0x43004300, 0xea;
shr.u32 $2, lo, 8;
lop3.b32 $2, $2, 0x000F000F, 0x43004300, 0xea;
shr.u32 $3, lo, 12;
lop3.b32 $3, $3, 0x000F000F, 0x43004300, 0xea;
lop3.b32 $4, hi, 0x000F000F, 0x43004300, 0xea;
shr.u32 $5, hi, 4;
lop3.b32 $5, $5, 0x000F000F, 0x43004300, 0xea;
shr.u32 $6, hi, 8;
lop3.b32 $6, $6, 0x000F000F, 0x43004300, 0xea;
shr.u32 $7, hi, 12;
lop3.b32 $7, $7, 0x000F000F, 0x43004300, 0xea;
}""")


@triton.jit
def _nibbles(q, ASM: tl.constexpr):
    """int32 words -> their 8 nibbles as bf16 128 + code (exact: bf16 0x4300 is 128, its last mantissa bits the
    code). ASM: two words at a time, their low (high) halves side by side by one PRMT, then one shift + LOP3
    per nibble pair: ~1 instruction a code. The plain form (the interpreter's) sets the fp32 bits instead."""
    if ASM:
        v0, v1, v2, v3, v4, v5, v6, v7 = tl.inline_asm_elementwise(
            _NIBBLES_ASM, "=r,=r,=r,=r,=r,=r,=r,=r,r,r", [q], dtype=(tl.bfloat16,) * 8, is_pure=True, pack=2)
    else:
        v0, v1, v2, v3 = _nib(q, 0), _nib(q, 1), _nib(q, 2), _nib(q, 3)
        v4, v5, v6, v7 = _nib(q, 4), _nib(q, 5), _nib(q, 6), _nib(q, 7)
    return v0, v1, v2, v3, v4, v5, v6, v7


@triton.jit
def _nib(q, J: tl.constexpr):
    if J <= 4:
        t = q << (16 - 4 * J)
    else:
        t = q >> (4 * J - 16)
    return ((t & 0xF0000) | 0x43000000).to(tl.float32, bitcast=True).to(tl.bfloat16)


def _mma_configs():
    if interpreting():
        return [triton.Config({"BN": 32, "SPLIT": 2, "STAGES": 1}, num_warps=4)]
    return [triton.Config({"BN": bn, "SPLIT": sp, "STAGES": st}, num_warps=w)
            for bn, sp, st, w in [(64, 2, 3, 4), (64, 4, 3, 4), (64, 8, 3, 4), (128, 1, 3, 4), (128, 2, 3, 4),
                                  (128, 4, 3, 4), (128, 2, 4, 8), (256, 1, 3, 8),
                                  # small layers: no split-K (no partials, no reduce), more programs
                                  (32, 1, 2, 4), (64, 1, 2, 4), (32, 2, 2, 4)]]


@triton.jit
def _mma_weights(q_ptr, s_ptr, m_ptr, t, n0, N, K, G: tl.constexpr, BN: tl.constexpr, EVEN: tl.constexpr):
    """K step t's words [BN, 16] of rows n0.. and their scales: [BN] (G = 128: applied after the dot) or
    [BN, 16] (one per word)."""
    rn = n0 + tl.arange(0, BN)
    kk = t * 16 + tl.arange(0, 16)
    wmask = kk < K // 8
    if EVEN:  # no bounds to check on the weight stream
        r4 = n0 // 4 + tl.arange(0, BN // 4)
        q3 = tl.load(q_ptr + r4[:, None, None] * (K // 8 * 4) + tl.arange(0, 4)[None, :, None]
                     + kk[None, None, :] * 4)  # [BN / 4, 4, 16]: 4 rows' words are 16 contiguous bytes
        q = tl.reshape(q3, (BN, 16))
    else:
        q = tl.load(q_ptr + (rn // 4 * (K // 8) * 4 + rn % 4)[:, None] + kk[None, :] * 4,
                    mask=(rn < N)[:, None] & wmask[None, :], other=0)
    if G == 128:
        s = tl.load(s_ptr + t * N + rn, mask=rn < N, other=0.0).to(tl.float32)
        mn = tl.load(m_ptr + t * N + rn, mask=rn < N, other=0.0).to(tl.float32) - 128.0 * s
    else:
        sm = (rn < N)[:, None] & wmask[None, :]
        grp = (kk * 8 // G)[None, :] * N + rn[:, None]
        s = tl.load(s_ptr + grp, mask=sm, other=0.0).to(tl.float32)
        mn = tl.load(m_ptr + grp, mask=sm, other=0.0).to(tl.float32) - 128.0 * s
    return q, s, mn


@triton.jit
def _dq(v, s, mn, G: tl.constexpr, F32_DOT: tl.constexpr):
    """Nibble tile v [BN, 16] (bf16 128 + code) as the MMA's A: as is for G = 128 (scaled after the dot), else
    dequantized per word (w = v s + m - 128 s; s, mn [BN, 16])."""
    # (one return at the end: Triton 3.6 compiles on past an early return in a constexpr branch)
    if G == 128:
        w = v
        if F32_DOT:
            w = v.to(tl.float32)
    else:
        w = v.to(tl.float32) * s + mn
        if not F32_DOT:
            w = w.to(tl.bfloat16)
    return w


@triton.jit
def _mma_tile(acc, q, s, mn, t, x_ptr, nw_ptr, rstd, rm, M, K, stride_xm, G: tl.constexpr, NORM: tl.constexpr,
              F32_DOT: tl.constexpr, ASM: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, EVEN: tl.constexpr):
    """acc [BN, BM] += K step t (16 words of BN rows = 128 columns) times x's rows rm: one MMA of K = 128 with
    A = [v0 | v1 | ... | v7] (column 16 j + w = nibble j of word w; a join + permute that moves no data: each
    thread's fragment is the nibbles of the words it loaded). That is input column 128 t + 16 j + w for G = 128
    (x's tile is contiguous), `_column(16 t + w, j, G)` in general (x's tile gathered in that order)."""
    vs = _nibbles(q, ASM)
    a = tl.join(tl.join(tl.join(_dq(vs[0], s, mn, G, F32_DOT), _dq(vs[1], s, mn, G, F32_DOT)),
                        tl.join(_dq(vs[2], s, mn, G, F32_DOT), _dq(vs[3], s, mn, G, F32_DOT))),
                tl.join(tl.join(_dq(vs[4], s, mn, G, F32_DOT), _dq(vs[5], s, mn, G, F32_DOT)),
                        tl.join(_dq(vs[6], s, mn, G, F32_DOT), _dq(vs[7], s, mn, G, F32_DOT))))
    a = tl.reshape(tl.permute(a, (0, 4, 3, 2, 1)), (BN, 128))
    r = tl.arange(0, 128)
    rk = t * 128 + r if G == 128 else _column(t * 16 + r % 16, r // 16, G)
    xmask = (rm < M)[None, :] if EVEN else (rm < M)[None, :] & (rk < K)[:, None]
    xt = tl.load(x_ptr + rm[None, :] * stride_xm + rk[:, None], mask=xmask, other=0.0)
    if NORM:
        xt = xt.to(tl.float32) * rstd[None, :] * tl.load(nw_ptr + rk, mask=rk < K, other=0.0)[:, None]
    if F32_DOT:  # exact fp32 products (fp32 mode; and Triton 3.9's interpreter, whose bf16 tl.dot is wrong)
        xt = xt.to(tl.float32)
        part = tl.dot(a, xt, input_precision="ieee")
    else:
        xt = xt.to(tl.bfloat16)
        part = tl.dot(a, xt)
    if G == 128:  # w x = s dot(v, x) + (m - 128 s) sum(x)
        if F32_DOT:
            xsum = tl.dot(tl.full((BN, 128), 1.0, tl.float32), xt, input_precision="ieee")
        else:
            xsum = tl.dot(tl.full((BN, 128), 1.0, tl.bfloat16), xt)  # the tile's x sums, already broadcast
        acc += part * s[:, None] + xsum * mn[:, None]
    else:
        acc += part
    return acc


@triton.autotune(configs=_mma_configs(), key=["N", "K", "BM", "G", "SWIGLU", "NORM"])
@triton.heuristics({"EVEN": lambda a: a["N"] % a["BN"] == 0 and a["K"] % 128 == 0})
@triton.jit(do_not_specialize=["M"])
def _mma_kernel(x_ptr, q_ptr, s_ptr, m_ptr, out_ptr, res_ptr, nw_ptr, ws_ptr, cnt_ptr, eps, M, N, K,
                stride_xm, stride_om, stride_rm, WS_M, WS_N, G: tl.constexpr, SWIGLU: tl.constexpr,
                RESIDUAL: tl.constexpr, NORM: tl.constexpr, F32_DOT: tl.constexpr, ASM: tl.constexpr,
                PDL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SPLIT: tl.constexpr, STAGES: tl.constexpr,
                EVEN: tl.constexpr):
    # out^T [BN, BM] = W [BN, K] x^T [K, BM] ("swap AB": the dequantized weight is the MMA's A operand, which may
    # live in registers; the few rows of x pad only the small N side of the MMA). A K step is one 16-word tile
    # of BN rows (128 columns), one MMA of K = 128 (`_mma_tile`): the weight is unpacked elementwise, never
    # shuffled, and x's tile is loaded in the order of its columns. SPLIT programs share the K range of a tile;
    # the last to finish (an atomic count) sums the fp32 partials and runs the epilogue, so small layers fill
    # the GPU.
    # PDL: the first K step's weights are loaded before the wait; x, the workspace and counts only after it.
    pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rn = pid_n * BN + tl.arange(0, BN)
    rm = pid_m * BM + tl.arange(0, BM)
    n_tiles = tl.cdiv(K, 128)
    per = tl.cdiv(n_tiles, SPLIT)
    t0 = pid_k * per
    t1 = tl.minimum(t0 + per, n_tiles)
    q, s, mn = _mma_weights(q_ptr, s_ptr, m_ptr, tl.minimum(t0, n_tiles - 1), pid_n * BN, N, K, G, BN, EVEN)
    pdl.wait(PDL)
    rstd = tl.full((BM,), 1.0, tl.float32)
    if NORM:
        rstd = _rms_rstd(x_ptr, rm, M, K, stride_xm, eps, BM, 256)
    acc = tl.zeros((BN, BM), tl.float32)
    if t0 < t1:  # a split past the last K step has nothing to add (its partial stays zero)
        acc = _mma_tile(acc, q, s, mn, t0, x_ptr, nw_ptr, rstd, rm, M, K, stride_xm, G, NORM, F32_DOT, ASM, BN,
                        BM, EVEN)
    for t in tl.range(t0 + 1, t1, num_stages=STAGES):
        q, s, mn = _mma_weights(q_ptr, s_ptr, m_ptr, t, pid_n * BN, N, K, G, BN, EVEN)
        acc = _mma_tile(acc, q, s, mn, t, x_ptr, nw_ptr, rstd, rm, M, K, stride_xm, G, NORM, F32_DOT, ASM, BN,
                        BM, EVEN)
    pdl.launch_dependents(PDL)
    if SPLIT > 1:
        ws = ws_ptr + rm[None, :] * WS_N + rn[:, None]
        tl.store(ws + pid_k * WS_M * WS_N, acc)
        tl.debug_barrier()  # every thread's partial is written before the count says so
        tile = cnt_ptr + pid_m * tl.num_programs(0) + pid_n
        if tl.atomic_add(tile, 1, sem="acq_rel", scope="gpu") == SPLIT - 1:  # the last of the SPLIT programs
            acc = tl.zeros((BN, BM), tl.float32)
            for i in range(SPLIT):
                acc += tl.load(ws + i * WS_M * WS_N, cache_modifier=".cg")
            tl.store(tile, 0)  # the count is ready for the next call (graph replays included)
            _epilogue(tl.trans(acc), rm, pid_n * BN, M, N, out_ptr, res_ptr, stride_om, stride_rm, BM, BN,
                      SWIGLU, RESIDUAL)
    else:
        _epilogue(tl.trans(acc), rm, pid_n * BN, M, N, out_ptr, res_ptr, stride_om, stride_rm, BM, BN, SWIGLU,
                  RESIDUAL)


_COUNTS: dict = {}


def _counters(device: torch.device) -> torch.Tensor:
    """Per-tile arrival counts of the split-K programs, zero between calls (the last program resets its own)."""
    c = _COUNTS.get(device)
    if c is None:
        c = _COUNTS[device] = torch.zeros(1 << 16, dtype=torch.int32, device=device)
    return c


def _mma(x: torch.Tensor, pw: PackedInt4, out: torch.Tensor, res: torch.Tensor | None, swiglu: bool,
         norm: tuple[torch.Tensor, float] | None, f32_dot: bool, asm: bool | None = None, **meta) -> None:
    """Launch `_mma_kernel` (autotuned unless meta gives BN, SPLIT, STAGES, num_warps)."""
    n, k = pw.shape
    m = x.shape[0]
    bm = min(64, max(16, triton.next_power_of_2(m)))
    ws_m, ws_n = triton.cdiv(m, bm) * bm, triton.cdiv(n, 16) * 16 + 256
    ws = torch.empty(8 * ws_m * ws_n, dtype=torch.float32, device=x.device)
    cnt = _counters(x.device)
    assert triton.cdiv(m, bm) * triton.cdiv(n, 16) <= cnt.numel()
    grid = lambda meta: (triton.cdiv(n, meta["BN"]), meta["SPLIT"], triton.cdiv(m, bm))  # noqa: E731
    fn = _mma_kernel.fn if meta else _mma_kernel
    on = PDL_SMALL_M and pdl.enabled(x.device)
    fn[grid](x, pw.qweight, pw.scales, pw.mins, out, out if res is None else res, x if norm is None else norm[0],
             ws, cnt, 0.0 if norm is None else norm[1], m, n, k, x.stride(0), out.stride(0),
             out.stride(0) if res is None else res.stride(0), ws_m, ws_n, G=pw.group_size,
             SWIGLU=swiglu, RESIDUAL=res is not None, NORM=norm is not None, F32_DOT=f32_dot or interpreting(),
             ASM=(not interpreting()) if asm is None else asm, PDL=on, BM=bm, **meta, **pdl.launch_kwargs(on))


def _gemv(x: torch.Tensor, pw: PackedInt4, out: torch.Tensor, res: torch.Tensor | None, swiglu: bool,
          norm: tuple[torch.Tensor, float] | None, **meta) -> None:
    """Launch `_gemv_kernel` (M = 1) or `_gemv_rows_kernel` (M <= GEMV_MAX_M); autotuned unless meta gives
    the tile (BN, BK, and X_WIDE for M = 1, plus num_warps)."""
    n, k = pw.shape
    m = x.shape[0]
    on = (PDL_GEMV if m == 1 else PDL_SMALL_M) and pdl.enabled(x.device)
    args = (x, pw.qweight, pw.scales, pw.mins, out, out if res is None else res, x if norm is None else norm[0],
            0.0 if norm is None else norm[1])
    flags = dict(G=pw.group_size, SWIGLU=swiglu, RESIDUAL=res is not None, NORM=norm is not None, PDL=on,
                 **meta, **pdl.launch_kwargs(on))
    grid = lambda meta: (triton.cdiv(n, meta["BN"]),)  # noqa: E731
    if m == 1:
        fn = _gemv_kernel.fn if meta else _gemv_kernel
        if meta:
            flags = {"X_WIDE": False, "PREFETCH": False, **flags}
        fn[grid](*args, n, k, 1, **flags)
    else:
        fn = _gemv_rows_kernel.fn if meta else _gemv_rows_kernel
        fn[grid](*args, m, n, k, x.stride(0), out.stride(0), out.stride(0) if res is None else res.stride(0),
                 BM=triton.next_power_of_2(m), **flags)



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
    on = PDL_GEMV and pdl.enabled(x.device)
    cnt = _counters(x.device)
    assert triton.cdiv(n, 4) <= cnt.numel()
    ws = _gemv2_scratch(x.device, n, 8)
    grid = lambda meta: (triton.cdiv(n, meta["BN"]), meta["SPLIT"])  # noqa: E731
    fn = _gemv2_kernel.fn if meta else _gemv2_kernel
    fn[grid](x, pw.qweight, pw.scales, pw.mins, out, out if res is None else res, x if norm is None else norm[0],
             ws, cnt, 0.0 if norm is None else norm[1], 0x3F800000, n, k, G=pw.group_size, SWIGLU=swiglu,
             RESIDUAL=res is not None, NORM=norm is not None, PAIRS=x.dtype != torch.float32, PDL=on, **meta,
             **pdl.launch_kwargs(on))

@triton.jit
def _dequant_kernel(q_ptr, s_ptr, m_ptr, wt_ptr, N, K, G: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rk = _tile_columns(tl.program_id(1) * BK, BK, G)
    w = _dequant_tile(q_ptr, s_ptr, m_ptr, rn, tl.program_id(1) * BK, N, K, G, BN, BK)  # [BK, BN]
    tl.store(wt_ptr + rk[:, None] * N + rn[None, :], w.to(wt_ptr.dtype.element_ty),
             mask=(rk < K)[:, None] & (rn < N)[None, :])


def int4_dequant(pw: PackedInt4, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The dense weight [N, K] (a transposed view of a contiguous [K, N]); `dequantize` is its reference."""
    n, k = pw.shape
    wt = torch.empty(k, n, dtype=dtype, device=pw.qweight.device)  # W^T: the layout cuBLAS reads for x @ W^T
    _dequant_kernel[(triton.cdiv(n, 64), triton.cdiv(k, 64))](pw.qweight, pw.scales, pw.mins, wt, n, k,
                                                                G=pw.group_size, BN=64, BK=64)
    return wt.t()


def supports(w: Int4Weight) -> bool:
    """Whether `int4_linear` handles this weight (group sizes the kernels are built for)."""
    n, k = w.shape
    return w.group_size in (32, 64, 128) and k % w.group_size == 0


def _interleaved(w: Int4Weight) -> Int4Weight:
    """A [gate | up] weight with rows reordered gate0, up0, gate1, up1, ... (the swiglu epilogue's order)."""
    half = w.shape[0] // 2
    order = interleave_rows(torch.arange(half), torch.arange(half, 2 * half)).to(w.packed.device)
    return Int4Weight(w.packed[order], w.scales[order], w.mins[order], w.group_size, w.perm)


def int4_linear(x: torch.Tensor, w: Int4Weight, residual: torch.Tensor | None = None,
                swiglu: bool = False, norm: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """x [..., K] @ W^T (+ residual [..., N]) for an engine `Int4Weight` on CUDA: repacked once (the pack is
    kept on the weight object, so the model code never sees the kernel layout), then `int4_matmul`. With
    `swiglu`, W is [gate | up] and the result silu(gate) * up [..., N / 2] (a second, row-interleaved pack)."""
    key = "_kernel_pack_swiglu" if swiglu else "_kernel_pack"
    pw = w.__dict__.get(key)
    if pw is None:
        pw = w.__dict__[key] = repack_int4(_interleaved(w) if swiglu else w)
    lead = x.shape[:-1]
    r2 = None if residual is None else residual.reshape(-1, residual.shape[-1]).contiguous()
    y = int4_matmul(x.reshape(-1, x.shape[-1]).contiguous(), pw, residual=r2, swiglu=swiglu, norm=norm)
    return y.view(*lead, y.shape[-1])


def int4_matmul(x: torch.Tensor, pw: PackedInt4, residual: torch.Tensor | None = None, swiglu: bool = False,
                out_dtype: torch.dtype | None = None, norm: tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """x [M, K] @ W^T -> [M, N] (or [M, N // 2] with swiglu) in out_dtype (default x's); see module doc.
    norm = (weight [K], eps): RMS-normalise x first (fp32, not rounded to x's dtype); fused into the GEMV."""
    n, k = pw.shape
    assert x.dim() == 2 and x.shape[1] == k and x.stride(1) == 1, (x.shape, x.stride(), pw.shape)
    assert pw.qweight.dtype == torch.int32 and pw.qweight.is_contiguous() and pw.qweight.shape[1:] == (k // 8, 4)
    assert pw.scales.is_contiguous() and pw.mins.is_contiguous() and pw.mins.shape == (k // pw.group_size, n)
    if norm is not None and pw.perm is not None:  # the prologue reads x in column order
        xf = x.float()
        x = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm[1]) * norm[0].float()).to(x.dtype)
        norm = None
    if pw.perm is not None:
        x = x[:, pw.perm]  # act-order: one gather of x (K elements a row), not of the weight
    m, n_out = x.shape[0], (n // 2 if swiglu else n)
    out_dtype = out_dtype or x.dtype
    if residual is not None:
        assert residual.shape == (m, n_out) and residual.stride(1) == 1, (residual.shape, residual.stride())
    if m >= DEQUANT_MIN_M:
        out = x.to(torch.bfloat16) @ int4_dequant(pw, torch.bfloat16).t()
        out = out.float()
        if swiglu:
            out = F.silu(out[:, 0::2]) * out[:, 1::2]
        return (out if residual is None else out + residual).to(out_dtype)
    out = torch.empty(m, n_out, dtype=out_dtype, device=x.device)
    if m == 1 and n * k >= GEMV2_MIN_NK:
        _gemv2(x, pw, out, residual, swiglu, norm)
    elif use_gemv(m, n, k):
        _gemv(x, pw, out, residual, swiglu, norm)
    else:
        _mma(x, pw, out, residual, swiglu, norm, f32_dot=x.dtype == torch.float32)
    return out
