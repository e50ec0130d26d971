"""InfLLM v2 prefill selection (T query tokens, B = 1): stage-1 softmax statistics and group scores over the
compressed keys, max-pooling onto 64-token blocks, forced blocks, top-k by a radix search (or int64 keys +
torch.topk past PREFILL_TOPK_MAX_BLOCKS); reference `reference.select_blocks_ref`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels.decode_attention import online_softmax

from engine.kernels.infllm.reference import IDX_BITS, LOG2E, InfLLMParams
from engine.kernels.infllm.shared import _dot, _interp, _load_rows


# ----------------------------------------------------------------------------------------------------------
# stage 1: compressed-key scores, pooled block keys, top-k

@triton.jit
def _row_setup(pid, len_ptr, T, KVH: tl.constexpr, NQT, BQ: tl.constexpr, GP: tl.constexpr, G: tl.constexpr,
               KS: tl.constexpr, ST: tl.constexpr):
    """Decode a program id into (row, kv head, query rows) and each query row's visible window count."""
    bk, qt = pid // NQT, pid % NQT
    b, h = bk // KVH, bk % KVH
    r = tl.arange(0, BQ * GP)
    t, hq = qt * BQ + r // GP, r % GP
    n = tl.load(len_ptr + b)
    pos = n - T + t
    seen = tl.where(pos + 1 >= KS, tl.maximum(pos + 1 - KS, 0) // ST + 1, 0)  # windows ending <= pos
    n_win = tl.where(n >= KS, tl.maximum(n - KS, 0) // ST + 1, 0)  # the row's last query sees the most
    return b, h, t, hq, (t < T) & (hq < G), seen, n_win


@triton.jit
def _window_logits(q, ck_ptr, b, h, c0, seen, n_win, qk_scale, sc_b, sc_h, sc_c, D: tl.constexpr,
                   BC: tl.constexpr, F32_DOT: tl.constexpr):
    """Logits (log2 units) of the query rows against compressed keys c0 .. c0 + BC - 1; -inf where a row may
    not see the window yet."""
    rc, rd = c0 + tl.arange(0, BC), tl.arange(0, D)
    ck = tl.load(ck_ptr + b * sc_b + h * sc_h + rc[:, None] * sc_c + rd[None, :], mask=(rc < n_win)[:, None],
                 other=0.0)
    qk = _dot(q, tl.trans(ck), F32_DOT) * qk_scale
    return rc, tl.where(rc[None, :] < seen[:, None], qk, float("-inf"))


@triton.jit
def _lse_kernel(q_ptr, ck_ptr, len_ptr, m_ptr, l_ptr, qk_scale, chunk, T, NQT,
                sq_b, sq_h, sq_t, sc_b, sc_h, sc_c,
                KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BQ: tl.constexpr, D: tl.constexpr,
                BC: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr, NSPLIT: tl.constexpr, F32_DOT: tl.constexpr):
    """Stage 1, pass 1: per query row (token x head) and split of the compressed axis, the running max and sum
    of exp2 of the logits (log2 units)."""
    sp = tl.program_id(1)
    b, h, t, hq, valid, seen, n_win = _row_setup(tl.program_id(0), len_ptr, T, KVH, NQT, BQ, GP, G, KS, ST)
    q = _load_rows(q_ptr, b, h * G + hq, t, valid, sq_b, sq_h, sq_t, D)
    m_i = tl.full((BQ * GP,), float("-inf"), tl.float32)
    l_i = tl.zeros((BQ * GP,), tl.float32)
    for c0 in range(sp * chunk, tl.minimum(sp * chunk + chunk, tl.max(tl.where(valid, seen, 0), axis=0)), BC):
        rc, qk = _window_logits(q, ck_ptr, b, h, c0, seen, n_win, qk_scale, sc_b, sc_h, sc_c, D, BC, F32_DOT)
        _p, _alpha, m_i, l_i = online_softmax(qk, m_i, l_i)  # rows that see nothing yet stay at 0 mass
    row = ((b * KVH + h) * T + t) * GP + hq
    tl.store(m_ptr + row * NSPLIT + sp, m_i, mask=valid)
    tl.store(l_ptr + row * NSPLIT + sp, l_i, mask=valid)


@triton.jit
def _score_kernel(q_ptr, ck_ptr, len_ptr, m_ptr, l_ptr, s_ptr, qk_scale, chunk, T, NQT, NCAP,
                  sq_b, sq_h, sq_t, sc_b, sc_h, sc_c,
                  KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BQ: tl.constexpr, D: tl.constexpr,
                  BC: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr, NSPLIT: tl.constexpr,
                  F32_DOT: tl.constexpr):
    """Stage 1, pass 2: merge the splits' (max, sum) into each row's log-sum-exp, recompute the probabilities
    and sum them over the group's heads: s [B, KVH, T, NCAP] float32 (0 where not visible)."""
    sp = tl.program_id(1)
    b, h, t, hq, valid, seen, n_win = _row_setup(tl.program_id(0), len_ptr, T, KVH, NQT, BQ, GP, G, KS, ST)
    row = ((b * KVH + h) * T + t) * GP + hq
    rsp = tl.arange(0, NSPLIT)
    ms = tl.load(m_ptr + row[:, None] * NSPLIT + rsp[None, :], mask=valid[:, None], other=float("-inf"))
    ls = tl.load(l_ptr + row[:, None] * NSPLIT + rsp[None, :], mask=valid[:, None], other=0.0)
    mx = tl.max(ms, axis=1)
    mx = tl.where(mx == float("-inf"), 0.0, mx)
    tot = tl.sum(ls * tl.exp2(ms - mx[:, None]), axis=1)
    lse = tl.where(tot > 0, mx + tl.log2(tl.where(tot > 0, tot, 1.0)), float("inf"))  # inf: nothing seen -> p = 0
    q = _load_rows(q_ptr, b, h * G + hq, t, valid, sq_b, sq_h, sq_t, D)
    tq = tl.program_id(0) % NQT * BQ + tl.arange(0, BQ)
    # windows past the tile's last visible one are never read (_block_keys reads windows < seen only)
    for c0 in range(sp * chunk, tl.minimum(sp * chunk + chunk, tl.max(tl.where(valid, seen, 0), axis=0)), BC):
        rc, qk = _window_logits(q, ck_ptr, b, h, c0, seen, n_win, qk_scale, sc_b, sc_h, sc_c, D, BC, F32_DOT)
        pr = tl.where(valid[:, None] & (qk > float("-inf")), tl.exp2(qk - lse[:, None]), 0.0)
        s = tl.sum(tl.reshape(pr, (BQ, GP, BC)), axis=1)  # [BQ, BC]: sum over the group's heads
        ok = (tq[:, None] < T) & (rc[None, :] < n_win)
        tl.store(s_ptr + ((b * KVH + h) * T + tq[:, None]) * NCAP + rc[None, :], s, mask=ok)


@triton.jit
def _block_keys(s_ptr, row, j, pos, dense, NB, SP: tl.constexpr, SPP: tl.constexpr, BS: tl.constexpr,
                INIT: tl.constexpr, LOCAL: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr, IDXB: tl.constexpr,
                NCAP, CHOSEN: tl.constexpr):
    """Selection keys of blocks j for the query at pos: pool window scores (max over windows j*SP-1 ..
    j*SP+SP-1), force the initial and local blocks (every block when `dense`), key = (score bits << IDXB) |
    (2^IDXB - 1 - j), -1 past the query's block. Scores are >= 0, so their float bits order like the floats; the
    index part breaks ties. CHOSEN: forced blocks get -1 too (the prefill path attends to them separately)."""
    seen = tl.where(pos + 1 >= KS, tl.maximum(pos + 1 - KS, 0) // ST + 1, 0)
    w = tl.arange(0, SPP)
    c = j[:, None] * SP - 1 + w[None, :]
    ok = (w[None, :] <= SP) & (c >= 0) & (c < seen)
    s = tl.load(s_ptr + row * NCAP + tl.where(ok, c, 0), mask=ok, other=0.0)
    return _keys_from_scores(tl.maximum(tl.max(s, axis=1), 0.0), j, pos, dense, NB, BS, INIT, LOCAL, IDXB, CHOSEN)


@triton.jit
def _keys_from_scores(score, j, pos, dense, NB, BS: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr,
                      IDXB: tl.constexpr, CHOSEN: tl.constexpr):
    """Block scores (>= 0) -> selection keys, see _block_keys."""
    qb = pos // BS
    forced = (j < INIT) | ((j <= qb) & ((j + LOCAL >= qb) | dense))
    score = tl.where(forced, float("inf"), score)
    key = (score.to(tl.int32, bitcast=True).to(tl.int64) << IDXB) | ((1 << IDXB) - 1 - j).to(tl.int64)
    keep = (j <= qb) & (j < NB)
    if CHOSEN:
        keep = keep & ~forced
    return tl.where(keep, key, -1)


@triton.jit
def _keys_kernel(s_ptr, key_ptr, len_ptr, T, NCAP, NB,
                 KVH: tl.constexpr, SP: tl.constexpr, SPP: tl.constexpr, BNB: tl.constexpr, BS: tl.constexpr,
                 INIT: tl.constexpr, LOCAL: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr,
                 IDXB: tl.constexpr, CHOSEN: tl.constexpr):
    """All selection keys [rows, NB] (then torch.topk): the path for many query rows (prefill)."""
    row, jt = tl.program_id(0), tl.program_id(1)
    pos = tl.load(len_ptr + row // (KVH * T)) - T + row % T
    j = jt * BNB + tl.arange(0, BNB)
    key = _block_keys(s_ptr, row, j, pos, pos < 0, NB, SP, SPP, BS, INIT, LOCAL, KS, ST, IDXB, NCAP, CHOSEN)
    tl.store(key_ptr + row * NB + j, key, mask=j < NB)


@triton.jit
def _radix_top(bits, k, RB: tl.constexpr):
    """Top-k of one row of non-negative int32 keys (-1 = not selectable) without sorting: (sel, slot). A radix
    search, RB bits a round, finds T = the largest value with count(bits >= T) >= k (the k-th largest; 0 when
    fewer than k are selectable); the selection is every key above T plus the lowest-index keys equal to T up to
    k (ties: lower block first, as the reference). Selected entries get slots 0 .. n_sel - 1 in index order (one
    prefix sum). Needs fewer than 2^16 entries."""
    d = tl.arange(0, 1 << RB)
    thr = tl.max(bits, axis=0) * 0  # an int32 scalar tensor, carried through the rounds
    for i in tl.static_range(32 // RB):
        shift = 32 - RB * (i + 1)  # constexpr (i is static)
        cand = thr | (d << shift)  # candidates with the top bits found so far; >= 2^31 wraps negative: skipped
        cnt = tl.sum((bits[None, :] >= cand[:, None]).to(tl.int32), axis=1)
        thr = thr | (tl.max(tl.where((cnt >= k) & (cand >= 0), d, 0), axis=0) << shift)
    gt = (bits > thr).to(tl.int32)
    eq = (bits == thr).to(tl.int32)
    need = k - tl.sum(gt, axis=0)  # how many keys equal to T are taken (lowest index first)
    c = tl.cumsum(gt + (eq << 16), axis=0)  # both prefix counts in one scan
    gt_before, eq_before = (c & 0xFFFF) - gt, (c >> 16) - eq
    sel = (gt > 0) | ((eq > 0) & (eq_before < need))
    return sel, gt_before + tl.minimum(eq_before, need)


@triton.jit
def _topk_kernel(s_ptr, idx_ptr, len_ptr, T, NCAP, NB, K,
                 KVH: tl.constexpr, SP: tl.constexpr, SPP: tl.constexpr, BNB: tl.constexpr, BS: tl.constexpr,
                 INIT: tl.constexpr, LOCAL: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr,
                 IDXB: tl.constexpr, CHOSEN: tl.constexpr, KP: tl.constexpr, RB: tl.constexpr):
    """Program per query row (prefill): its block keys (as _keys_kernel) and their top K by _radix_top, straight
    into idx [rows, K] (block order, -1 after): no [rows, NB] int64 key tensor, no torch.topk."""
    row = tl.program_id(0)
    pos = tl.load(len_ptr + row // (KVH * T)) - T + row % T
    j = tl.arange(0, BNB)
    key = _block_keys(s_ptr, row, j, pos, pos < 0, NB, SP, SPP, BS, INIT, LOCAL, KS, ST, IDXB, NCAP, CHOSEN)
    bits = tl.where(key >= 0, (key >> IDXB).to(tl.int32), -1)  # the score's float bits; the index part -> ties
    sel, slot = _radix_top(bits, K, RB)
    tl.store(idx_ptr + row * K + tl.where(sel, slot, 0), j, mask=sel)
    rk = tl.arange(0, KP)
    tl.store(idx_ptr + row * K + rk, tl.full((KP,), -1, tl.int32), mask=(rk < K) & (rk >= tl.sum(sel.to(tl.int32), 0)))


PREFILL_TOPK_RADIX_BITS = 2  # bits a round of _radix_top in prefill (16 rounds)
# one program holds a row's blocks (padded to a power of 2): above 2048, keys + torch.topk. On the H200, 16 chunks
# of 8K up to 128K: 2048 blocks, top-k 0.79 vs 1.65 ms (keys + topk) a chunk at the end; 2049 blocks (4096 padded)
# 67.7 vs 58.4 ms of selection a layer, slower
PREFILL_TOPK_MAX_BLOCKS = 2048


def decode_slots(p: InfLLMParams, num_blocks: int, dense_len: int = 0) -> int:
    """Selected-block slots of a decode step: top-k, or every block of a context below dense_len."""
    return min(num_blocks, max(p.topk, triton.cdiv(max(dense_len, 0), p.block_size)))


def select_blocks(q: torch.Tensor, ck_cache: torch.Tensor, lengths: torch.Tensor, num_blocks: int,
                  p: InfLLMParams, scale: float | None = None, num_splits: int | None = None,
                  q_chunk: int = 2048, rows: int = 128, num_warps: int = 8, chosen_only: bool = False,
                  block_windows: int = 64) -> torch.Tensor:
    """q [B, H, T, D] (last dim contiguous), ck_cache [B, KVH, NC_cap, D], lengths int32 [B] (the row's last
    query is at lengths - 1) -> int32 [B, KVH, T, K] selected blocks (-1 = none). Long T runs in q_chunk slices
    to bound the [T, NC] score scratch. (A decode step selects inside sparse_decode instead.) rows / num_warps:
    the stage-1 query tile (8 tokens x 16 heads) and its warps; on the H200 at 128K (last 8K chunk) 128 rows x 8
    warps took 4.23 ms against 4.69 for 64 x 4 (the same blocks); 128 windows a step changed near-tie picks.
    chosen_only: only the top-k picks beyond the forced initial and local blocks (K = topk - forced), for
    sparse_prefill_attention, which attends to those separately."""
    bsz, h, t, d = q.shape
    if t > q_chunk:
        parts = [select_blocks(q[:, :, s:s + q_chunk], ck_cache, lengths - (t - min(s + q_chunk, t)), num_blocks,
                               p, scale, num_splits, q_chunk, rows, num_warps, chosen_only, block_windows)
                 for s in range(0, t, q_chunk)]
        return torch.cat(parts, dim=2)
    kvh, ncap = ck_cache.shape[1], ck_cache.shape[2]
    g = h // kvh
    gp = triton.next_power_of_2(g)
    # query tokens per program: BQ * GP rows (>= 16 for tl.dot), up to `rows` rows in prefill
    bq = max(1, 16 // gp) if t == 1 else max(1, 16 // gp, min(triton.next_power_of_2(t), rows // gp))
    nqt = triton.cdiv(t, bq)
    bc = block_windows  # compressed keys per loop step
    # splits of the compressed axis: enough programs to fill the GPU, no more than there are key tiles
    nsplit = num_splits or max(1, min(64, triton.next_power_of_2(triton.cdiv(264, bsz * kvh * nqt)),
                                      triton.next_power_of_2(triton.cdiv(ncap, bc))))
    chunk = triton.cdiv(triton.cdiv(ncap, nsplit), bc) * bc
    scale = scale if scale is not None else d ** -0.5
    dev = q.device
    m = torch.empty(bsz * kvh * t * gp * nsplit, dtype=torch.float32, device=dev)
    l = torch.empty_like(m)
    sp = p.block_size // p.kernel_stride
    s = torch.empty(bsz, kvh, t, ncap, dtype=torch.float32, device=dev)  # window scores
    f32 = _interp() or q.dtype == torch.float32
    common = dict(KVH=kvh, G=g, GP=gp, BQ=bq, D=d, BC=bc, KS=p.kernel_size, ST=p.kernel_stride, NSPLIT=nsplit,
                  F32_DOT=f32, num_warps=num_warps)
    strides = (q.stride(0), q.stride(1), q.stride(2), *ck_cache.stride()[:3])
    _lse_kernel[(bsz * kvh * nqt, nsplit)](q, ck_cache, lengths, m, l, scale * LOG2E, chunk, t, nqt, *strides,
                                           **common)
    _score_kernel[(bsz * kvh * nqt, nsplit)](q, ck_cache, lengths, m, l, s, scale * LOG2E, chunk, t, nqt, ncap,
                                             *strides, **common)
    assert num_blocks < (1 << IDX_BITS) - 1
    pool = dict(KVH=kvh, SP=sp, SPP=triton.next_power_of_2(sp + 1), BS=p.block_size, INIT=p.init_blocks,
                LOCAL=p.local_blocks, KS=p.kernel_size, ST=p.kernel_stride, IDXB=IDX_BITS, num_warps=4)
    kk = min(p.topk - forced_blocks(p) if chosen_only else p.topk, num_blocks)
    if 0 < kk and num_blocks <= PREFILL_TOPK_MAX_BLOCKS:
        idx = torch.empty(bsz, kvh, t, kk, dtype=torch.int32, device=dev)
        _topk_kernel[(bsz * kvh * t,)](s, idx, lengths, t, ncap, num_blocks, kk,
                                       BNB=triton.next_power_of_2(num_blocks), CHOSEN=chosen_only,
                                       KP=triton.next_power_of_2(kk), RB=PREFILL_TOPK_RADIX_BITS, **pool)
        return idx
    keys = torch.empty(bsz, kvh, t, num_blocks, dtype=torch.int64, device=dev)
    bnb = min(256, triton.next_power_of_2(num_blocks))
    _keys_kernel[(bsz * kvh * t, triton.cdiv(num_blocks, bnb))](s, keys, lengths, t, ncap, num_blocks, BNB=bnb,
                                                                CHOSEN=chosen_only, **pool)
    if kk <= 0:
        return torch.full((bsz, kvh, t, 1), -1, dtype=torch.int32, device=dev)
    vals, idx = torch.topk(keys, kk, dim=-1, sorted=False)
    return torch.where(vals >= 0, idx, -1).to(torch.int32)


def forced_blocks(p: InfLLMParams) -> int:
    """Blocks every query past the first few always keeps: the initial ones and the local window's."""
    return p.init_blocks + p.local_blocks + 1
