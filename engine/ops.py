"""The dispatch seam: one function per hot op. Plain PyTorch here (what runs on CPU and what kernels are
tested against); CUDA branches that call `engine/kernels/` plug in at the top of each function."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.cpu_int4 import CpuInt4, cpu_int4_linear
from engine.quant import Int4Weight, int4_linear_ref

KERNELS = True  # CUDA branches into engine/kernels/ (Triton); tests turn it off to compare with the plain path


def linear(x: torch.Tensor, w: torch.Tensor | Int4Weight | CpuInt4, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] -> [..., out]. An `Int4Weight` is dequantized for this one layer, then dropped; a `CpuInt4`
    runs torch's CPU int4 kernel."""
    if isinstance(w, CpuInt4):
        y = cpu_int4_linear(x, w)
        return y if bias is None else y + bias
    if isinstance(w, Int4Weight):
        if KERNELS and x.is_cuda:
            from engine.kernels import int4_matmul as k4  # imports Triton: only on the CUDA path

            if k4.supports(w):
                y = k4.int4_linear(x, w)
                return y if bias is None else y + bias
        y = int4_linear_ref(x, w)
        return y if bias is None else y + bias
    return F.linear(x, w, bias)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm in float32, as transformers' LlamaRMSNorm. With `residual`, first x = x + residual and
    return (normed, x) so a fused kernel can do both in one pass."""
    if residual is not None:
        x = x + residual
    xf = x.float()
    normed = weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return normed if residual is None else (normed, x)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """NeoX rotate-half rotary. q [B, T, H, D], k [B, T, KVH, D], cos/sin [B, T, D]."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [B, T, 1, D]
    half = q.shape[-1] // 2

    def rot(x: torch.Tensor) -> torch.Tensor:
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              causal: bool, scale: float) -> torch.Tensor:
    """q [B, H, T, D] against k/v [B, KVH, L, D] (the cache up to the last written position) -> [B, H, T, D].
    mask: bool [B, 1, T, L] (True = attend) or None; causal: plain causal (T == L) when mask is None."""
    B, H, T, D = q.shape
    kvh = k.shape[1]
    if T == 1 and KERNELS and q.is_cuda and mask is None and D & (D - 1) == 0:
        from engine.kernels.decode_attention import decode_attention  # flash-decoding over the cache in place

        lengths = torch.full((B,), k.shape[2], dtype=torch.int32, device=q.device)
        return decode_attention(q[:, :, 0], k, v, lengths, scale).unsqueeze(2)
    if T == 1:
        # decode: each KV head serves its group of query heads as one small matmul, reading the cache in
        # place (CPU SDPA copies/tiles the strided cache slice, which dominated decode time)
        s = (q.reshape(B, kvh, H // kvh, D) @ k.transpose(-1, -2)) * scale  # [B, KVH, G, L]
        if mask is not None:
            s = s.masked_fill(~mask.view(B, 1, 1, -1), float("-inf"))
        p = torch.softmax(s.float(), dim=-1).to(q.dtype)
        return (p @ v).view(B, H, 1, D)
    if kvh != H:
        k, v = k.repeat_interleave(H // kvh, dim=1), v.repeat_interleave(H // kvh, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, scale=scale)
