"""The dispatch seam: one function per hot op. Plain PyTorch here (what runs on CPU and what kernels are
tested against); CUDA branches that call `engine/kernels/` plug in at the top of each function.

The fused ops (`rms_norm` with a residual, `rotary_to_cache`, `swiglu_linear`, `linear` with a residual) exist
so the CUDA decode step is a short chain of kernels (see docs/kernels.md); their plain paths compute the same
thing op by op."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.cpu_head import CpuHead, cpu_head_logits
from engine.cpu_int4 import CpuInt4, cpu_int4_linear
from engine.cpu_q4 import CpuQ4, cpu_q4_linear
from engine.quant import Int4Weight, int4_linear_ref

KERNELS = True  # CUDA branches into engine/kernels/ (Triton); tests turn it off to compare with the plain path


def kernels_on(x: torch.Tensor) -> bool:
    """Whether `x`'s ops take the Triton branches."""
    return KERNELS and x.is_cuda


def linear(x: torch.Tensor, w: torch.Tensor | Int4Weight | CpuQ4 | CpuInt4 | CpuHead, bias: torch.Tensor | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] -> [..., out] (+ residual, same shape as the output). An `Int4Weight` is dequantized for this
    one layer, then dropped; a `CpuInt4` runs torch's CPU int4 kernel. On CUDA the int4 kernel adds the
    residual in its epilogue (one kernel instead of two)."""
    if isinstance(w, CpuInt4):
        y = cpu_int4_linear(x, w)
        y = y if bias is None else y + bias
    elif isinstance(w, CpuQ4):
        y = cpu_q4_linear(x, w)
        y = y if y.dtype == x.dtype else y.to(x.dtype)
        y = y if bias is None else y + bias
    elif isinstance(w, CpuHead):
        y = cpu_head_logits(x, w)
    elif isinstance(w, Int4Weight):
        if kernels_on(x):
            from engine.kernels import int4_matmul as k4  # imports Triton: only on the CUDA path

            if k4.supports(w):
                if bias is None:
                    return k4.int4_linear(x, w, residual)
                y = k4.int4_linear(x, w) + bias
                return y if residual is None else y + residual
        y = int4_linear_ref(x, w)
        y = y if bias is None else y + bias
    else:
        y = F.linear(x, w, bias)
    return y if residual is None else y + residual


def linear_raw(x: torch.Tensor, w: CpuInt4) -> torch.Tensor:
    """linear() on torch's CPU int4 kernel, output left in bf16 (the kernel's dtype)."""
    return cpu_int4_linear(x, w, out_dtype=torch.bfloat16)


def swiglu_linear(x: torch.Tensor, w: torch.Tensor | Int4Weight) -> torch.Tensor:
    """silu(gate) * up, where [gate | up] = x @ w^T (w's first half of rows is gate). On CUDA an int4 weight runs
    the GEMV with SwiGLU in its epilogue (rows interleaved once, cached on the weight); a dense one runs cuBLAS
    then the fused SwiGLU kernel."""
    if kernels_on(x):
        if isinstance(w, Int4Weight):
            from engine.kernels import int4_matmul as k4

            if k4.supports(w):
                return k4.int4_linear(x, w, swiglu=True)
        elif isinstance(w, torch.Tensor):
            from engine.kernels.swiglu import swiglu

            gu = F.linear(x, w)
            return swiglu(gu.reshape(-1, gu.shape[-1])).view(*gu.shape[:-1], gu.shape[-1] // 2)
    g, u = linear(x, w).chunk(2, dim=-1)
    return F.silu(g) * u


def norm_linear(x: torch.Tensor, norm_weight: torch.Tensor, eps: float, w: torch.Tensor | Int4Weight,
                swiglu: bool = False) -> torch.Tensor:
    """linear (or swiglu_linear) of rms_norm(x). On CUDA, one token and an int4 weight, the norm is the GEMV's
    prologue (normalised x stays fp32 and is never written): one kernel instead of two."""
    if kernels_on(x) and isinstance(w, Int4Weight) and w.perm is None and x.numel() == x.shape[-1]:
        from engine.kernels import int4_matmul as k4

        if k4.supports(w):
            return k4.int4_linear(x, w, swiglu=swiglu, norm=(norm_weight, eps))
    h = rms_norm(x, norm_weight, eps)
    return swiglu_linear(h, w) if swiglu else linear(h, w)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm in float32, as transformers' LlamaRMSNorm. With `residual`, first x = x + residual and
    return (normed, x) so a fused kernel can do both in one pass."""
    if kernels_on(x) and x.shape[-1] <= 16384:
        from engine.kernels.rmsnorm import rms_norm as k_rms

        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        r2 = None if residual is None else residual.reshape(-1, shape[-1]).contiguous()
        y, h = k_rms(x2, weight, eps, r2)
        return y.view(shape) if residual is None else (y.view(shape), h.view(shape))
    if residual is not None:
        x = x + residual
    # same math as `weight * (xf * rsqrt(...)).to(x.dtype)`; dtype checks instead of no-op casts (CPU decode
    # runs this 60 times a token, where every dispatched call counts)
    xf = x if x.dtype == torch.float32 else x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    normed = weight * (normed if x.dtype == torch.float32 else normed.to(x.dtype))
    return normed if residual is None else (normed, x)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """NeoX rotate-half rotary. q [B, T, H, D], k [B, T, KVH, D], cos/sin [B, T, D]."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [B, T, 1, D]
    half = q.shape[-1] // 2

    def rot(x: torch.Tensor) -> torch.Tensor:
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


def rotary_qk(qk: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """apply_rotary on q and k heads stacked in one tensor [B, T, H + KVH, D], in 3 ops instead of 10.
    rotate_half(x) * sin == swap_halves(x) * sin_signed (sin_signed: first half negated): negation is exact, so
    the result is bit-equal to apply_rotary's."""
    swapped = qk.unflatten(-1, (2, -1)).flip(-2).flatten(-2)
    return qk * cos.unsqueeze(2) + swapped * sin_signed.unsqueeze(2)


def rotary_to_cache(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor
                    ) -> torch.Tensor:
    """Rotary on q and k, then k and v written into the cache; returns roped q.

    q [B, T, H, D], k/v [B, T, KVH, D], cos/sin [B, T, D] (rope.py's tables: both halves of a row equal),
    caches [max_batch, KVH, S, D], rows/slots int32 [B * T]: cache row and slot of each token. On CUDA one kernel
    does it all (q rotated in place); the plain path is apply_rotary + an indexed cache write."""
    B, T, H, D = q.shape
    if kernels_on(q) and D % 2 == 0 and (D // 2) & (D // 2 - 1) == 0 and q.stride(-1) == 1:
        from engine.kernels.rotary import rotary_kv

        q3 = q.reshape(B * T, H, D)  # a view for the fused qkv projection's split (checked by the kernel)
        rotary_kv(q3, k.reshape(B * T, -1, D), v.reshape(B * T, -1, D), cos.reshape(B * T, -1),
                  sin.reshape(B * T, -1), k_cache, v_cache, rows, slots)
        return q3.view(B, T, H, D)
    q, k = apply_rotary(q, k, cos, sin)
    r, s = rows.long(), slots.long()
    k_cache[r, :, s] = k.reshape(B * T, -1, D).to(k_cache.dtype)
    v_cache[r, :, s] = v.reshape(B * T, -1, D).to(v_cache.dtype)
    return q


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              causal: bool, scale: float, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """q [B, H, T, D] against k/v [B, KVH, L, D] (the cache up to the last written position) -> [B, H, T, D].
    mask: bool [B, 1, T, L] (True = attend) or None; causal: plain causal (T == L) when mask is None.
    lengths: int32 [B], each row's valid cache length (decode, T == 1): the CUDA kernel reads it on the device
    instead of a mask, so a CUDA graph can serve every position; the plain path turns it into a mask. With a
    mask and T > 1 (speculative tree verification), the CUDA tree-attention kernel reads keys up to it."""
    B, H, T, D = q.shape
    kvh = k.shape[1]
    if T == 1 and kernels_on(q) and (mask is None or lengths is not None) and D & (D - 1) == 0:
        from engine.kernels.decode_attention import decode_attention  # flash-decoding over the cache in place

        if lengths is None:
            lengths = torch.full((B,), k.shape[2], dtype=torch.int32, device=q.device)
        return decode_attention(q[:, :, 0], k, v, lengths, scale).unsqueeze(2)
    if T > 1 and kernels_on(q) and mask is not None and lengths is not None:
        from engine.kernels import tree_attention as ta  # speculative verification: T queries, a tree mask

        if ta.supports(q, k, mask):
            return ta.tree_attention(q, k, v, mask, lengths, scale)
    if lengths is not None and mask is None:
        mask = (torch.arange(k.shape[2], device=q.device)[None, :] < lengths[:, None])[:, None, None]
    if T == 1:
        # decode: each KV head serves its group of query heads as one small matmul, reading the cache in
        # place (CPU SDPA copies/tiles the strided cache slice, which dominated decode time)
        s = (q.reshape(B, kvh, H // kvh, D) @ k.transpose(-1, -2)) * scale  # [B, KVH, G, L]
        if mask is not None:
            s = s.masked_fill(~mask.view(B, 1, 1, -1), float("-inf"))
        if q.dtype == torch.float32:
            p = torch.softmax(s, dim=-1)
        else:
            p = torch.softmax(s.float(), dim=-1).to(q.dtype)
        return (p @ v).view(B, H, 1, D)
    if kvh != H:
        k, v = k.repeat_interleave(H // kvh, dim=1), v.repeat_interleave(H // kvh, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None, scale=scale)


def paged_decode_attention(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, tables: torch.Tensor,
                           lengths: torch.Tensor, scale: float) -> torch.Tensor:
    """One query a row against its own slots of the paged pool: q [B, H, D], pools [blocks, block_size, KVH, D],
    tables int32 [B, max_blocks], lengths int32 [B] -> [B, H, D]. On CUDA flash-decoding through the block
    tables (engine/kernels/paged_decode_attention.py); elsewhere its reference."""
    from engine.kernels import paged_decode_attention as pda  # imports Triton: only where it is installed

    if kernels_on(q):
        return pda.paged_decode_attention(q, k_pool, v_pool, tables, lengths, scale)
    return pda.paged_decode_attention_ref(q, k_pool, v_pool, tables, lengths, scale)


def paged_decode_supported(head_dim: int, block_size: int) -> bool:
    """Whether paged_decode_attention's CUDA kernel takes these shapes (else a step gathers and runs SDPA)."""
    from engine.kernels.paged_decode_attention import supports

    return supports(head_dim, block_size)


def decode_attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                          k_cache: torch.Tensor, v_cache: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor,
                          scale: float, max_len: int | None = None) -> torch.Tensor:
    """A decode step's attention for one new token a row: rotary on q and k, k and v written into the cache at
    (rows, pos), then q against the row's cache [0, pos]. q [B, H, D], k/v [B, KVH, D] (before rotary), cos/sin
    [B, D] rows at each position, rows/pos int32 [B] -> [B, H, D]. max_len: a bound on pos + 1 (it picks the
    kernel's regime, never the result). On CUDA one kernel does it all, plus a merge for long sequences
    (engine/kernels/rope_decode_attention.py); the plain path is rotary_to_cache + attention."""
    B, H, D = q.shape
    if kernels_on(q) and D % 2 == 0 and (D // 2) & (D // 2 - 1) == 0 and D >= 32:
        from engine.kernels.rope_decode_attention import rope_decode_attention

        return rope_decode_attention(q, k, v, cos, sin, k_cache, v_cache, rows, pos, scale, max_len)
    q = rotary_to_cache(q[:, None], k[:, None], v[:, None], cos[:, None], sin[:, None], k_cache, v_cache, rows, pos)
    r = rows.long()
    return attention(q.transpose(1, 2), k_cache[r], v_cache[r], None, False, scale, (pos + 1).to(torch.int32))[:, :, 0]


def decode_layers(x: torch.Tensor, w, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                  v_cache: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, max_len: int | None = None
                  ) -> torch.Tensor:
    """Every decoder layer of a one-row, one-token int4 decode step: x [1, H] updated in place (and returned),
    each layer's k, v written at (rows, pos) of caches [L, maxB, KVH, S, D]. w: fused_decode.DecodeLayers.
    max_len bounds pos + 1 (picks the attention split, never the result). On CUDA one persistent kernel
    (engine/kernels/fused_decode.py); the plain path is its reference, op by op."""
    from engine.kernels import fused_decode as fd  # imports Triton: DecodeLayers exist only where it is installed

    if kernels_on(x):
        return fd.decode_layers(x, w, cos, sin, k_cache, v_cache, rows, pos, max_len)
    x.copy_(fd.decode_layers_ref(x, w, cos, sin, k_cache, v_cache, rows, pos))
    return x


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, V] -> int64 [B], first index of each row's max (a two-stage kernel on CUDA)."""
    if kernels_on(logits) and logits.dim() == 2 and logits.stride(1) == 1:
        from engine.kernels.argmax import argmax as k_argmax

        return k_argmax(logits)
    return logits.argmax(-1)


def argmax_step(logits: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor, history: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A greedy decode step's end: logits [B, V] (any float dtype) -> (picks int64 [B], float32 logits [B, V]);
    the step's inputs advance in place (tokens int64 [B, 1] <- picks, pos int64 [B] += 1) and, with a history
    int64 [B, L], history[b, new pos] = pick. Two kernels on CUDA (engine/kernels/argmax.py)."""
    if kernels_on(logits) and logits.dim() == 2 and logits.stride(1) == 1:
        from engine.kernels.argmax import argmax_step as k_step

        return k_step(logits, tokens, pos, history)
    f32 = logits.float()
    nxt = f32.argmax(-1)
    tokens.copy_(nxt[:, None])
    pos.add_(1)
    if history is not None:
        rows = torch.arange(len(pos), device=pos.device)
        ok = pos < history.shape[1]
        history[rows[ok], pos[ok]] = nxt[ok]
    return nxt, f32


def decode_inputs(tokens: torch.Tensor, pos: torch.Tensor, embed: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  scale: float, out: tuple) -> tuple:
    """A decode step's inputs from its device (token [B, 1], position [B]) into the static buffers `out` =
    (x [B, H], cos rows [B, D], sin rows [B, D], slots int32 [B], lengths int32 [B]): the scaled embedding row,
    the rotary rows at the position, the position and position + 1. One kernel on CUDA."""
    if kernels_on(embed):
        from engine.kernels.decode_inputs import decode_inputs as k_inputs

        return k_inputs(tokens, pos, embed, cos, sin, scale, out)
    x = F.embedding(tokens[:, 0], embed)
    x = x * scale if scale != 1.0 else x
    for buf, val in zip(out, (x, cos[pos], sin[pos], pos, pos + 1)):
        buf.copy_(val)  # slots and lengths: cast to int32 by the copy
    return out
