"""The start of a CUDA-graph decode step in one kernel, beside its PyTorch reference `decode_inputs_ref`.

From the step's device inputs (token and position of each row) it writes everything the layers read: the
token's embedding row (times the embedding scale, MiniCPM), the rotary rows at the position, and the int32
cache slot and attended length (position, position + 1). Done with torch ops these are 6-7 launches of 1-2 us
each (embedding, two gathers, add, casts). Takes part in programmatic dependent launch (engine/kernels/pdl.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl


def decode_inputs_ref(tokens, pos, embed, cos, sin, scale: float = 1.0):
    """tokens int64 [B, 1], pos int64 [B], embed [V, H], cos/sin [S, D] -> (x [B, H] in embed's dtype,
    cos rows [B, D], sin rows [B, D], slots int32 [B] = pos, lengths int32 [B] = pos + 1)."""
    x = torch.nn.functional.embedding(tokens[:, 0], embed)
    if scale != 1.0:
        x = x * scale
    return x, cos[pos], sin[pos], pos.to(torch.int32), (pos + 1).to(torch.int32)


@triton.jit
def _kernel(tok_ptr, pos_ptr, emb_ptr, cos_ptr, sin_ptr, x_ptr, co_ptr, so_ptr, slot_ptr, len_ptr,
            H, D, s_emb, s_cos, s_sin, scale, SCALE: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr,
            PDL: tl.constexpr):
    b = tl.program_id(0)
    pdl.launch_dependents(PDL)
    pdl.wait(PDL)  # the inputs were advanced by the step before (or uploaded by the host)
    t = tl.load(tok_ptr + b)
    p = tl.load(pos_ptr + b)
    rh = tl.arange(0, BH)
    e = tl.load(emb_ptr + t * s_emb + rh, mask=rh < H)
    if SCALE:  # as torch's x * scale: computed in float32, rounded once to x's dtype
        e = (e.to(tl.float32) * scale).to(x_ptr.dtype.element_ty)
    tl.store(x_ptr + b * H + rh, e, mask=rh < H)
    rd = tl.arange(0, BD)
    tl.store(co_ptr + b * D + rd, tl.load(cos_ptr + p * s_cos + rd, mask=rd < D), mask=rd < D)
    tl.store(so_ptr + b * D + rd, tl.load(sin_ptr + p * s_sin + rd, mask=rd < D), mask=rd < D)
    tl.store(slot_ptr + b, p.to(tl.int32))
    tl.store(len_ptr + b, (p + 1).to(tl.int32))


def decode_inputs(tokens, pos, embed, cos, sin, scale: float = 1.0, out: tuple | None = None):
    """Triton version of `decode_inputs_ref` (same arguments and results; last dims contiguous). `out`: the five
    output tensors to write into (a CUDA graph's static buffers), else new ones."""
    b = pos.shape[0]
    (v, h), d = embed.shape, cos.shape[1]
    assert tokens.is_contiguous() and pos.is_contiguous() and tokens.numel() == b
    assert embed.stride(1) == cos.stride(1) == sin.stride(1) == 1 and sin.shape[1] == d
    if out is None:
        dev = embed.device
        out = (torch.empty(b, h, dtype=embed.dtype, device=dev), torch.empty(b, d, dtype=cos.dtype, device=dev),
               torch.empty(b, d, dtype=sin.dtype, device=dev), torch.empty(b, dtype=torch.int32, device=dev),
               torch.empty(b, dtype=torch.int32, device=dev))
    x, co, so, slots, lengths = out
    assert x.is_contiguous() and co.is_contiguous() and so.is_contiguous() and x.shape == (b, h)
    on = pdl.enabled(embed.device)
    bh = triton.next_power_of_2(h)
    _kernel[(b,)](tokens, pos, embed, cos, sin, x, co, so, slots, lengths, h, d, embed.stride(0), cos.stride(0),
                  sin.stride(0), float(scale), SCALE=scale != 1.0, BH=bh, BD=triton.next_power_of_2(d), PDL=on,
                  num_warps=min(8, max(1, bh // 512)), **pdl.launch_kwargs(on))
    return out
