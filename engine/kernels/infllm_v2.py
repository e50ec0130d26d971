"""InfLLM v2 sparse attention (MiniCPM4): Triton kernels beside their PyTorch references.

docs/infllm_v2.md pins the algorithm down. In short, for a query token at position i:
compressed keys C_c = mean(K[c*stride : c*stride + kernel_size]) -> stage 1: per query head a softmax over
the compressed keys whose window ends at or before i, summed over the heads of the GQA group -> max-pooled
onto 64-token blocks -> initial and local blocks forced -> top-k blocks (ties: lower block first) -> stage 2:
softmax attention over the tokens of the selected blocks, causal.

Queries come as T tokens per row whose last position is `lengths[b] - 1` (a prefill chunk: B = 1; decode:
T = 1, any B), so one set of kernels serves both, and a decode step reads lengths from the device only
(no host sync: it replays in a CUDA graph).
"""
from __future__ import annotations

import torch
import triton

# the family, one part a file (engine/kernels/infllm/); callers import the names from here
from engine.kernels.infllm.compress import compress_keys  # noqa: F401
from engine.kernels.infllm.decode import (_split_attend, _stage1, select_decode, sparse_decode,  # noqa: F401
                                          sparse_decode_attention)
from engine.kernels.infllm.prefill import sparse_attention, sparse_prefill_attention  # noqa: F401
from engine.kernels.infllm.reference import (IDX_BITS, LOG2E, InfLLMParams, block_scores_ref,  # noqa: F401
                                             compress_keys_ref, idx_to_mask, select_blocks_ref,
                                             sparse_attention_ref)
from engine.kernels.infllm.select import (PREFILL_TOPK_MAX_BLOCKS, PREFILL_TOPK_RADIX_BITS, decode_slots,  # noqa: F401
                                          forced_blocks, select_blocks)
from engine.kernels.infllm.shared import BAR_STEP, _barrier, _grid_sync, _merge_kernel, _sm_count  # noqa: F401


def infllm_v2_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, ck_cache: torch.Tensor,
                        lengths: torch.Tensor, p: InfLLMParams, q_select: torch.Tensor | None = None,
                        scale: float | None = None, dense_len: int = 0,
                        k_select: torch.Tensor | None = None) -> torch.Tensor:
    """The sparse path: select blocks (from q_select, the pre-rotary queries when use_nope, else q) and attend.
    q [B, H, T, D], caches [B, KVH, S, D], ck_cache [B, KVH, NC_cap, D].
    Decode (T == 1): `sparse_decode`, which writes the step's compressed key itself (from k_select, else
    k_cache): 3 launches, no host sync, graph-safe; rows shorter than `dense_len` attend to every block (the
    dense switch, read from the lengths on the device). Prefill (B == 1): ck_cache must already hold the chunk's
    windows (compress_keys)."""
    nb = triton.cdiv(k_cache.shape[2], p.block_size)
    qs = q if q_select is None else q_select
    if q.shape[2] == 1:
        return sparse_decode(q, k_cache, v_cache, ck_cache, lengths, p, q_select, k_select, scale, dense_len)
    if q.shape[0] == 1 and forced_blocks(p) <= p.topk:
        return sparse_prefill_attention(q, k_cache, v_cache, ck_cache, lengths, p, q_select, scale)
    return sparse_attention(q, k_cache, v_cache, select_blocks(qs, ck_cache, lengths, nb, p, scale), lengths,
                            p.block_size, scale)
