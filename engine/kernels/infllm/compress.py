"""InfLLM v2 compressed keys: mean-pooled 32-token windows (stride 16) written into the compressed-key cache;
reference `reference.compress_keys_ref`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels.infllm.reference import InfLLMParams


@triton.jit
def _compress_kernel(k_ptr, ck_ptr, len_ptr, sk_b, sk_h, sk_s, sc_b, sc_h, sc_c,
                     KVH: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr, D: tl.constexpr, NCAP):
    """Program (row x head, j): the j-th newest complete window of the row, mean-pooled into the cache."""
    bh, j = tl.program_id(0), tl.program_id(1)
    b, h = bh // KVH, bh % KVH
    n = tl.load(len_ptr + b)
    c = tl.maximum(n - KS, 0) // ST - j
    ok = (n >= KS) & (c >= 0) & (c < NCAP)
    lim = tl.where(ok, KS, 0)  # a vector mask: the interpreter rejects scalar-bool masks
    c = tl.where(ok, c, 0)  # in-bounds addresses even where masked
    rw, rd = tl.arange(0, KS), tl.arange(0, D)
    k = tl.load(k_ptr + b * sk_b + h * sk_h + (c * ST + rw)[:, None] * sk_s + rd[None, :],
                mask=(rw < lim)[:, None], other=0.0)
    mean = tl.sum(k.to(tl.float32), axis=0) / KS
    tl.store(ck_ptr + b * sc_b + h * sc_h + c * sc_c + rd, mean.to(ck_ptr.dtype.element_ty), mask=rd < lim * D)


def compress_keys(k_cache: torch.Tensor, ck_cache: torch.Tensor, lengths: torch.Tensor, n_new: int,
                  p: InfLLMParams) -> None:
    """Write the `n_new` newest complete windows of each row (by its length) into ck_cache [B, KVH, NC, D].
    Recomputing a window already there is harmless, so a step passes n_new = its tokens // stride + 1."""
    b, kvh, _, d = k_cache.shape
    assert k_cache.stride(3) == 1 and ck_cache.stride(3) == 1 and lengths.dtype == torch.int32
    _compress_kernel[(b * kvh, n_new)](k_cache, ck_cache, lengths, *k_cache.stride()[:3], *ck_cache.stride()[:3],
                                       KVH=kvh, KS=p.kernel_size, ST=p.kernel_stride, D=d, NCAP=ck_cache.shape[2])
