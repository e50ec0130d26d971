"""Dequantize a packed int4 weight into a dense [N, K] (prefill: then cuBLAS); reference `engine.quant.dequantize`."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels.int4.layout import PackedInt4, _dequant_tile, _tile_columns


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
