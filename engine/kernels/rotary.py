"""Fused rotary embedding on q and k, with k and v written straight into the static KV cache.

Beside its PyTorch reference `rotary_kv_ref`. Rotation is Llama's rotate-half form (MiniCPM uses it):
(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) over the two halves of each head. One program per token
and head: q heads are rotated in place; k heads are rotated and stored, with v, at cache[b, h, pos].
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


def _rot(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def rotary_kv_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  k_cache: torch.Tensor, v_cache: torch.Tensor, batch_idx: torch.Tensor, pos: torch.Tensor) -> None:
    """q [T, Hq, D] rotated in place; k, v [T, Hkv, D] -> k_cache/v_cache [B, Hkv, S, D] at (batch_idx[t], :,
    pos[t]); cos, sin [T, D / 2] (already taken at each token's position), or [T, D] rows of a rotate-half
    table whose two halves are equal (engine/rope.py's), of which the first half is read."""
    half = q.shape[-1] // 2
    c, s = cos[:, None, :half].float(), sin[:, None, :half].float()
    q.copy_(_rot(q, c, s))
    k_cache[batch_idx.long(), :, pos.long()] = _rot(k, c, s).to(k_cache.dtype)
    v_cache[batch_idx.long(), :, pos.long()] = v.to(v_cache.dtype)


@triton.jit
def _rotary_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, b_ptr, p_ptr, s_cos, s_sin,
                   sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, sc_b, sc_h, sc_s, svc_b, svc_h, svc_s,
                   HQ: tl.constexpr, HALF: tl.constexpr):
    t, h = tl.program_id(0), tl.program_id(1)
    rd = tl.arange(0, HALF)
    cos = tl.load(cos_ptr + t * s_cos + rd).to(tl.float32)
    sin = tl.load(sin_ptr + t * s_sin + rd).to(tl.float32)
    if h < HQ:
        base = q_ptr + t * sq_t + h * sq_h
        x1 = tl.load(base + rd).to(tl.float32)
        x2 = tl.load(base + HALF + rd).to(tl.float32)
        tl.store(base + rd, (x1 * cos - x2 * sin).to(q_ptr.dtype.element_ty))
        tl.store(base + HALF + rd, (x2 * cos + x1 * sin).to(q_ptr.dtype.element_ty))
    else:
        hk = h - HQ
        b = tl.load(b_ptr + t)
        p = tl.load(p_ptr + t)
        base = k_ptr + t * sk_t + hk * sk_h
        x1 = tl.load(base + rd).to(tl.float32)
        x2 = tl.load(base + HALF + rd).to(tl.float32)
        dst = kc_ptr + b * sc_b + hk * sc_h + p * sc_s
        tl.store(dst + rd, (x1 * cos - x2 * sin).to(kc_ptr.dtype.element_ty))
        tl.store(dst + HALF + rd, (x2 * cos + x1 * sin).to(kc_ptr.dtype.element_ty))
        vsrc = v_ptr + t * sv_t + hk * sv_h
        vdst = vc_ptr + b * svc_b + hk * svc_h + p * svc_s
        tl.store(vdst + rd, tl.load(vsrc + rd).to(vc_ptr.dtype.element_ty))
        tl.store(vdst + HALF + rd, tl.load(vsrc + HALF + rd).to(vc_ptr.dtype.element_ty))


def rotary_kv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
              k_cache: torch.Tensor, v_cache: torch.Tensor, batch_idx: torch.Tensor, pos: torch.Tensor) -> None:
    """Triton version of `rotary_kv_ref` (q, k, v may be strided views of one fused qkv projection)."""
    t, hq, d = q.shape
    hkv = k.shape[1]
    assert d % 2 == 0 and (d // 2) == triton.next_power_of_2(d // 2)
    assert q.stride(2) == k.stride(2) == v.stride(2) == k_cache.stride(3) == v_cache.stride(3) == 1
    assert cos.shape == sin.shape and cos.shape[0] == t and cos.shape[1] in (d // 2, d), (cos.shape, q.shape)
    assert cos.stride(1) == sin.stride(1) == 1 and batch_idx.dtype == pos.dtype == torch.int32
    _rotary_kernel[(t, hq + hkv)](q, k, v, cos, sin, k_cache, v_cache, batch_idx, pos, cos.stride(0), sin.stride(0),
                                  q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                                  *k_cache.stride()[:3], *v_cache.stride()[:3], HQ=hq, HALF=d // 2, num_warps=1)
