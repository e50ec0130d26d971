"""Fused SwiGLU: silu(gate) * up in one pass over the concatenated gate|up projection, beside `swiglu_ref`.

The int4 path fuses this into the GEMV's epilogue instead (engine.kernels.int4_matmul, swiglu=True); this
kernel serves the bf16 path, where the gate|up projection is one cuBLAS matmul.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


def swiglu_ref(gu: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """gu [M, 2I] = [gate | up] -> silu(gate) * up [M, I]."""
    i = gu.shape[1] // 2
    return (F.silu(gu[:, :i].float()) * gu[:, i:].float()).to(out_dtype or gu.dtype)


@triton.jit
def _swiglu_kernel(gu_ptr, out_ptr, I, s_in, s_out, BLOCK: tl.constexpr):
    row, blk = tl.program_id(0), tl.program_id(1)
    cols = blk * BLOCK + tl.arange(0, BLOCK)
    mask = cols < I
    g = tl.load(gu_ptr + row * s_in + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * s_in + I + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * s_out + cols, (g / (1.0 + tl.exp(-g)) * u).to(out_ptr.dtype.element_ty), mask=mask)


def swiglu(gu: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Triton version of `swiglu_ref`."""
    m, two_i = gu.shape
    assert two_i % 2 == 0 and gu.stride(1) == 1
    out = torch.empty(m, two_i // 2, dtype=out_dtype or gu.dtype, device=gu.device)
    block = 1024
    _swiglu_kernel[(m, triton.cdiv(two_i // 2, block))](gu, out, two_i // 2, gu.stride(0), out.stride(0),
                                                        BLOCK=block)
    return out
