"""InfLLM v2 stage 2 over a selection: `sparse_attention` (any selection, per token, split over the selected
blocks) and `sparse_prefill_attention` (B = 1 prefill: the forced initial + local blocks walked once per tile of
rows, the chosen rest per token, the two partials merged); reference `reference.sparse_attention_ref`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels.decode_attention import softmax_result

from engine.kernels.infllm.reference import LOG2E, InfLLMParams
from engine.kernels.infllm.select import select_blocks
from engine.kernels.infllm.shared import _interp, _load_rows, _merge_kernel, _softmax_step


# ----------------------------------------------------------------------------------------------------------
# stage 2: attention over the selected blocks

@triton.jit
def _sparse_attn_kernel(q_ptr, k_ptr, v_ptr, idx_ptr, len_ptr, o_ptr, lse_ptr, qk_scale, per_split, T,
                        sq_b, sq_h, sq_t, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
                        KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
                        K: tl.constexpr, NSPLIT: tl.constexpr, SP0: tl.constexpr, F32_DOT: tl.constexpr,
                        PB: tl.constexpr):
    """Program (row x kv head x token, split of the selected list): each selected block's K/V tile is loaded
    once for the G query heads of the group; online softmax; partial output + log-sum-exp (log2) into split
    SP0 + split of the NSPLIT partials of its rows. Slots may hold -1 anywhere (skipped)."""
    pid, sp = tl.program_id(0), tl.program_id(1)
    b, rest = pid // (KVH * T), pid % (KVH * T)
    h, t = rest // T, rest % T
    pos = tl.load(len_ptr + b) - T + t
    rg, rd, rs = tl.arange(0, GP), tl.arange(0, D), tl.arange(0, PB * BS)
    q = _load_rows(q_ptr, b, h * G + rg, tl.full((GP,), 0, tl.int32) + t, rg < G, sq_b, sq_h, sq_t, D)
    m_i = tl.full((GP,), float("-inf"), tl.float32)
    l_i = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    j_end = tl.minimum(sp * per_split + per_split, K)
    for j in range(sp * per_split, j_end, PB):  # PB selected blocks a step: one [PB * BS]-key tile
        slot = j + rs // BS
        ks = tl.load(idx_ptr + pid * K + slot, mask=slot < j_end, other=-1) * BS + rs % BS
        ok = (ks >= 0) & (ks <= pos)  # block -1 (an empty slot): negative positions
        ks = tl.where(ok, ks, 0)  # in-bounds addresses even where masked
        k = tl.load(k_ptr + b * sk_b + h * sk_h + ks[:, None] * sk_s + rd[None, :], mask=ok[:, None], other=0.0)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + ks[:, None] * sv_s + rd[None, :], mask=ok[:, None], other=0.0)
        m_i, l_i, acc = _softmax_step(q, k, v, ok[None, :], m_i, l_i, acc, qk_scale, F32_DOT)
    out, lse = softmax_result(acc, m_i, l_i)
    prow = ((b * T + t) * KVH * G + h * G + rg) * NSPLIT + SP0 + sp  # partials [B * T, Hq, NSPLIT, D]
    tl.store(o_ptr + prow[:, None] * D + rd[None, :], out.to(o_ptr.dtype.element_ty), mask=(rg < G)[:, None])
    tl.store(lse_ptr + prow, lse, mask=rg < G)


def sparse_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, idx: torch.Tensor,
                     lengths: torch.Tensor, block_size: int, scale: float | None = None,
                     num_splits: int | None = None, num_warps: int = 4) -> torch.Tensor:
    """q [B, H, T, D], caches [B, KVH, S, D], idx int32 [B, KVH, T, K] (-1 = none, anywhere) -> [B, H, T, D]."""
    bsz, h, t, d = q.shape
    kvh = k_cache.shape[1]
    g = h // kvh
    kk = idx.shape[-1]
    idx = idx.contiguous()
    want = min(32, triton.next_power_of_2(triton.cdiv(264, bsz * kvh * t)), kk)
    nsplit = num_splits or 1 << (want.bit_length() - 1)  # a power of 2 (the merge's loop)
    per = triton.cdiv(kk, nsplit)
    scale = scale if scale is not None else d ** -0.5
    out = torch.empty(bsz, t, h, d, dtype=q.dtype, device=q.device)
    # one split (long prefill): the kernel's partial rows are exactly out's [B * T, H, D] rows, no merge
    part = out if nsplit == 1 else torch.empty(bsz * t, h, nsplit, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(bsz * t, h, nsplit, dtype=torch.float32, device=q.device)
    _sparse_attn_kernel[(bsz * kvh * t, nsplit)](
        q, k_cache, v_cache, idx, lengths, part, lse, scale * LOG2E, per, t, q.stride(0), q.stride(1), q.stride(2),
        *k_cache.stride()[:3], *v_cache.stride()[:3], KVH=kvh, G=g, GP=max(16, triton.next_power_of_2(g)), D=d,
        BS=block_size, K=kk, NSPLIT=nsplit, SP0=0, F32_DOT=_interp() or q.dtype == torch.float32, PB=1,
        num_warps=num_warps)
    if nsplit > 1:
        _merge_kernel[(bsz * t * h,)](part, lse, out, D=d, NSPLIT=nsplit)
    return out.transpose(1, 2)


@triton.jit
def _forced_attn_kernel(q_ptr, k_ptr, v_ptr, len_ptr, o_ptr, lse_ptr, qk_scale, T, NQT,
                        sq_h, sq_t, sk_h, sk_s, sv_h, sv_s,
                        KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BT: tl.constexpr, D: tl.constexpr,
                        BS: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr, NSPLIT: tl.constexpr,
                        F32_DOT: tl.constexpr):
    """Prefill (one sequence), the forced blocks: program (kv head, tile of BT consecutive tokens x the G heads =
    one [BT * GP, D] query tile). The initial blocks and the local window are the same for every token of a
    block, so the tile walks them once, flash-attention style: [0, INIT) then [qb_first - LOCAL, qb_last],
    each row masked to its own forced set and causally. Partial into split 0 of its rows."""
    h, qt = tl.program_id(0) // NQT, tl.program_id(0) % NQT
    r = tl.arange(0, BT * GP)
    t, hq = qt * BT + r // GP, r % GP
    valid = (t < T) & (hq < G)
    start = tl.load(len_ptr) - T
    pos = start + t
    qb = pos // BS
    q = _load_rows(q_ptr, 0, h * G + hq, t, valid, 0, sq_h, sq_t, D)
    rd, rs = tl.arange(0, D), tl.arange(0, BS)
    m_i = tl.full((BT * GP,), float("-inf"), tl.float32)
    l_i = tl.zeros((BT * GP,), tl.float32)
    acc = tl.zeros((BT * GP, D), tl.float32)
    qb_first = (start + qt * BT) // BS
    pos_last = start + tl.minimum(qt * BT + BT, T) - 1
    qb_last = pos_last // BS
    lo = tl.maximum(qb_first - LOCAL, INIT)
    for i in range(0, tl.minimum(INIT, qb_last + 1) + qb_last + 1 - tl.minimum(lo, qb_last + 1)):
        blk = tl.where(i < INIT, i, lo + i - tl.minimum(INIT, qb_last + 1))
        ks = blk * BS + rs
        ok = valid[:, None] & (ks[None, :] <= pos[:, None]) & ((blk < INIT) | (blk + LOCAL >= qb))[:, None]
        inside = (ks <= pos_last)[:, None]  # keys past the tile's last token may lie past the cache
        k = tl.load(k_ptr + h * sk_h + ks[:, None] * sk_s + rd[None, :], mask=inside, other=0.0)
        v = tl.load(v_ptr + h * sv_h + ks[:, None] * sv_s + rd[None, :], mask=inside, other=0.0)
        m_i, l_i, acc = _softmax_step(q, k, v, ok, m_i, l_i, acc, qk_scale, F32_DOT)
    out, lse = softmax_result(acc, m_i, l_i)
    prow = (t * KVH * G + h * G + hq) * NSPLIT  # partials [T, Hq, NSPLIT, D], split 0
    tl.store(o_ptr + prow[:, None] * D + rd[None, :], out, mask=valid[:, None])
    tl.store(lse_ptr + prow, lse, mask=valid)


CHOSEN_BLOCKS_A_STEP, CHOSEN_WARPS = 1, 4  # prefill: the per-token chosen blocks' key tile (blocks) and warps


def sparse_prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                             ck_cache: torch.Tensor, lengths: torch.Tensor, p: InfLLMParams,
                             q_select: torch.Tensor | None = None, scale: float | None = None,
                             tile_rows: int = 128, num_warps: int = 8) -> torch.Tensor:
    """Prefill of one sequence (B = 1), T tokens ending at lengths[0] - 1 -> [1, H, T, D]. The forced blocks
    (initial + local window, most of each token's selection) run as tiles of tile_rows (token, head) rows shared by
    neighbouring tokens; only the chosen rest goes token by token; the two partials are merged. Needs
    forced_blocks(p) <= topk (else every forced block is not always kept): infllm_v2_attention checks."""
    _, h, t, d = q.shape
    kvh = k_cache.shape[1]
    g, gp = h // kvh, triton.next_power_of_2(h // kvh)
    nb = triton.cdiv(k_cache.shape[2], p.block_size)
    scale = scale if scale is not None else d ** -0.5
    f32 = _interp() or q.dtype == torch.float32
    part = torch.empty(t, h, 2, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(t, h, 2, dtype=torch.float32, device=q.device)
    bt = max(1, tile_rows // gp)  # tokens a tile
    nqt = triton.cdiv(t, bt)
    _forced_attn_kernel[(kvh * nqt,)](q, k_cache, v_cache, lengths, part, lse, scale * LOG2E, t, nqt, q.stride(1),
                                      q.stride(2), k_cache.stride(1), k_cache.stride(2), v_cache.stride(1),
                                      v_cache.stride(2), KVH=kvh, G=g, GP=gp, BT=bt, D=d, BS=p.block_size,
                                      INIT=p.init_blocks, LOCAL=p.local_blocks, NSPLIT=2, F32_DOT=f32,
                                      num_warps=num_warps)
    idx = select_blocks(q if q_select is None else q_select, ck_cache, lengths, nb, p, scale, chosen_only=True)
    kk = idx.shape[-1]
    _sparse_attn_kernel[(kvh * t, 1)](
        q, k_cache, v_cache, idx.contiguous(), lengths, part, lse, scale * LOG2E, kk, t, q.stride(0), q.stride(1),
        q.stride(2), *k_cache.stride()[:3], *v_cache.stride()[:3], KVH=kvh, G=g, GP=max(16, gp), D=d,
        BS=p.block_size, K=kk, NSPLIT=2, SP0=1, F32_DOT=f32, PB=CHOSEN_BLOCKS_A_STEP, num_warps=CHOSEN_WARPS)
    out = torch.empty(1, t, h, d, dtype=q.dtype, device=q.device)
    _merge_kernel[(t * h,)](part, lse, out, D=d, NSPLIT=2)
    return out.transpose(1, 2)
