"""w4a16 int4 matmul: the dispatch on the engine's packed int4 weights, beside its PyTorch reference `int4_matmul_ref`.

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

import torch
import torch.nn.functional as F

# the family's parts, re-exported: callers (engine/ops.py, fused_decode.py, bench/, tests/) import them from here
from engine.kernels.int4.dequant import _dequant_kernel, int4_dequant  # noqa: F401
from engine.kernels.int4.gemv import _gemv, _gemv_kernel, _gemv_rows_kernel  # noqa: F401
from engine.kernels.int4.gemv_splitk import _GEMV2_TUNED, _gemv2, _gemv2_kernel  # noqa: F401
from engine.kernels.int4.layout import (PackedInt4, _column, _counters, _magic_const, int4_matmul_ref,  # noqa: F401
                                        interleave_rows, interpreting, repack_int4, unpack_codes)
from engine.kernels.int4.mma import _mma, _mma_configs, _mma_kernel  # noqa: F401
from engine.quant import Int4Weight

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
