"""The FMA GEMV, first form: `_gemv_kernel` (M = 1 below `GEMV2_MIN_NK`: the 0.5B / smollm2 layers, latency-bound)
and `_gemv_rows_kernel` (M <= GEMV_MAX_M rows on a small layer: speculative verification). Reference:
`layout.int4_matmul_ref`. Launcher `_gemv`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl
from engine.kernels.int4 import layout
from engine.kernels.int4.layout import (PackedInt4, _column, _epilogue, _load_words, _magic_const, _rms_rstd,
                                        interpreting)


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


def _gemv(x: torch.Tensor, pw: PackedInt4, out: torch.Tensor, res: torch.Tensor | None, swiglu: bool,
          norm: tuple[torch.Tensor, float] | None, **meta) -> None:
    """Launch `_gemv_kernel` (M = 1) or `_gemv_rows_kernel` (M <= GEMV_MAX_M); autotuned unless meta gives
    the tile (BN, BK, and X_WIDE for M = 1, plus num_warps)."""
    n, k = pw.shape
    m = x.shape[0]
    on = (layout.PDL_GEMV if m == 1 else layout.PDL_SMALL_M) and pdl.enabled(x.device)
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
