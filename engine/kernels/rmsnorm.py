"""Fused RMSNorm (+ residual add), beside its PyTorch reference `rms_norm_ref`.

With a residual, h = x + residual is computed, written (it is the next residual stream) and normalised in
one pass: one read of each input and one write of each output instead of three kernels. Takes part in
programmatic dependent launch (engine/kernels/pdl.py): the weight is loaded before waiting on the kernel before.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None,
                 out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, H] (+ residual [M, H]) -> (normed [M, H] in out_dtype or x's, h = x + residual or x)."""
    h = x if residual is None else (x.float() + residual.float()).to(x.dtype)
    hf = h.float()
    y = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return y.to(out_dtype or x.dtype), h


@triton.jit
def _rms_kernel(x_ptr, r_ptr, w_ptr, y_ptr, h_ptr, H, eps, sx, sr, sy, sh, RESIDUAL: tl.constexpr,
                BH: tl.constexpr, PDL: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BH)
    mask = cols < H
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)  # a weight: no kernel of the step writes it
    pdl.launch_dependents(PDL)
    pdl.wait(PDL)
    x = tl.load(x_ptr + row * sx + cols, mask=mask, other=0.0).to(tl.float32)
    if RESIDUAL:
        x += tl.load(r_ptr + row * sr + cols, mask=mask, other=0.0).to(tl.float32)
        x = x.to(h_ptr.dtype.element_ty)  # h is stored in its dtype; normalise the stored value (as the ref)
        tl.store(h_ptr + row * sh + cols, x, mask=mask)
        x = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / H + eps)
    tl.store(y_ptr + row * sy + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None,
             out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of `rms_norm_ref` (same signature and results)."""
    m, hdim = x.shape
    assert x.stride(1) == 1 and weight.shape == (hdim,) and weight.is_contiguous()
    y = torch.empty(m, hdim, dtype=out_dtype or x.dtype, device=x.device)
    if residual is None:
        h, r = x, x
    else:
        assert residual.shape == x.shape and residual.stride(1) == 1
        h, r = torch.empty_like(x), residual
    bh = triton.next_power_of_2(hdim)
    on = pdl.enabled(x.device) and m <= 128  # decode-sized grids: a prefill's rows would crowd the next kernel
    _rms_kernel[(m,)](x, r, weight, y, h, hdim, eps, x.stride(0), r.stride(0), y.stride(0), h.stride(0),
                      RESIDUAL=residual is not None, BH=bh, PDL=on, num_warps=min(16, max(1, bh // 256)),
                      **pdl.launch_kwargs(on))
    return y, h
