"""The int4 family's shared part: the kernel layout (`PackedInt4`, `repack_int4`), the reference
`int4_matmul_ref`, and the `@triton.jit` pieces every int4 kernel uses (unpacking, column order, epilogue, the
RMSNorm prologue's 1/rms, split-K arrival counters). The layout and the unpacking trick: docs/kernels.md and
engine/kernels/int4_matmul.py's docstring.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from engine.quant import Int4Weight, dequantize, pack_int4, unpack_int4

# PDL (engine/kernels/pdl.py) for the M = 1 GEMV and for the small-M kernels. Each kernel lets its dependents
# launch once its weights are streamed (a trigger at the start let the next kernel's waiting programs take SM
# slots this one still needed: slower than no PDL). H200, smollm2's 120-call chain in a CUDA graph, 2026-11-23:
# M = 1 2.96 -> 2.47 us a call; M = 8 (GEMV over rows) 8.72 -> 9.30, so the small-M kernels run without it.
PDL_GEMV = True
PDL_SMALL_M = False


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


_COUNTS: dict = {}


def _counters(device: torch.device) -> torch.Tensor:
    """Per-tile arrival counts of the split-K programs, zero between calls (the last program resets its own)."""
    c = _COUNTS.get(device)
    if c is None:
        c = _COUNTS[device] = torch.zeros(1 << 16, dtype=torch.int32, device=device)
    return c
