"""int4 linears on CPU through torch's own int4 kernel (`aten._weight_int4pack_mm_for_cpu`).

The weights stay 4-bit in memory (~8x less to stream per token than a dequantized fp32 copy); the kernel wants
bf16 activations, so x is rounded to bf16 for these matmuls (outputs come back in x's dtype). torch's form is
w = (q - 8) * scale + zero, so our w = q * scale + min maps to zero = min + 8 * scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.quant import Int4Weight, unpack_int4


@dataclass
class CpuInt4:
    packed: torch.Tensor  # torch's CPU int4 pack of [out, in]
    scales_zeros: torch.Tensor  # bf16 [in / group, out, 2]
    group_size: int
    out_features: int


def to_cpu_int4(w: Int4Weight) -> CpuInt4 | None:
    """Repack for the CPU kernel, or None where it does not apply (act-order permutation, odd shapes)."""
    n, k = w.shape
    if w.perm is not None or w.group_size not in (32, 64, 128, 256) or k % w.group_size or n % 8:
        return None
    try:
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_int4(w.packed).to(torch.int32), 1)
    except (RuntimeError, AttributeError):
        return None
    s, m = w.scales.float(), w.mins.float()  # [out, groups]
    sz = torch.stack([s, m + 8 * s], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)  # [groups, out, 2]
    return CpuInt4(packed, sz, w.group_size, n)


def cpu_int4_linear(x: torch.Tensor, w: CpuInt4, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """x [..., in] -> [..., out] with the 4-bit weight, bf16 activations inside; out_dtype defaults to x's."""
    x2 = x.reshape(-1, x.shape[-1])
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2 if x2.dtype == torch.bfloat16 else x2.to(torch.bfloat16),
                                                   w.packed, w.group_size, w.scales_zeros)
    out = out_dtype or x.dtype
    return (y if out == torch.bfloat16 else y.to(out)).view(*x.shape[:-1], w.out_features)
