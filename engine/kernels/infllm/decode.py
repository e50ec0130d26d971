"""InfLLM v2 decode (T = 1, any batch): stage 1 with the step's compressed key and a grid barrier, rank
selection (the on-device dense switch), attention over the selected blocks, merge: four launches, no host
sync, graph-safe; and the "split" form. References: `reference.select_blocks_ref`, `sparse_attention_ref`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl
from engine.kernels.decode_attention import online_softmax, softmax_result

from engine.kernels.infllm.reference import IDX_BITS, LOG2E, InfLLMParams
from engine.kernels.infllm.select import _keys_from_scores, decode_slots, forced_blocks
from engine.kernels.infllm.shared import (_barrier, _dot, _grid_sync, _interp, _load_rows, _merge, _sm_count,
                                          _softmax_step)


# ----------------------------------------------------------------------------------------------------------
# decode (T == 1): four launches, graph-safe, no host sync
#   1. stage 1 (+ the newest compressed key): per (row x kv head, split of the windows) the logits of the G query
#      heads; a grid-wide barrier to merge the splits' softmax statistics; then each split's windows' scores,
#      pooled per block (`own` max and `tail` window, combined by the next kernel). Without the barrier (the CPU
#      interpreter runs programs one by one; grids larger than the GPU) the same kernel runs twice, by phase.
#   2. top-k by rank into slots 0 .. n_sel - 1 (the on-device dense switch);  3. attention;  4. merge.
#   (A fused select + attend kernel, one program per tile of blocks ranking its own blocks, measured 170 us at
#   128K on the H200: far slower than the rank kernel + attention, so they stay separate.)


@triton.jit
def _decode_logits(q, ck_ptr, b, h, c0, n_win, c_new, new, qk_scale, sc_b, sc_h, sc_c, D: tl.constexpr,
                   BC: tl.constexpr, F32_DOT: tl.constexpr, SUB: tl.constexpr):
    """Logits (log2 units) of the query heads against windows c0 .. c0 + BC - 1 (-inf past the row's windows).
    SUB: window c_new comes from registers (`new`, computed by this program, its store not yet visible)."""
    rc, rd = c0 + tl.arange(0, BC), tl.arange(0, D)
    ck = tl.load(ck_ptr + b * sc_b + h * sc_h + rc[:, None] * sc_c + rd[None, :], mask=(rc < n_win)[:, None],
                 other=0.0)
    if SUB:
        ck = tl.where((rc == c_new)[:, None], new[None, :], ck)
    qk = _dot(q, tl.trans(ck), F32_DOT) * qk_scale
    return rc, tl.where((rc < n_win)[None, :], qk, float("-inf"))


@triton.jit
def _merged_lse(m_ptr, l_ptr, row, valid, NSPLIT: tl.constexpr):
    """Each query head's log-sum-exp (log2) over all splits; +inf where it saw no window (probabilities 0)."""
    rsp = tl.arange(0, NSPLIT)
    ms = tl.load(m_ptr + row[:, None] * NSPLIT + rsp[None, :], mask=valid[:, None], other=float("-inf"),
                 cache_modifier=".cg")  # other programs' stores: read through L2
    ls = tl.load(l_ptr + row[:, None] * NSPLIT + rsp[None, :], mask=valid[:, None], other=0.0, cache_modifier=".cg")
    mx = tl.max(ms, axis=1)
    mx = tl.where(mx == float("-inf"), 0.0, mx)
    tot = tl.sum(ls * tl.exp2(ms - mx[:, None]), axis=1)
    return tl.where(tot > 0, mx + tl.log2(tl.where(tot > 0, tot, 1.0)), float("inf"))


@triton.jit
def _pool_store(qk, lse, valid, rc, n_win, pool_ptr, bh, NB, c0, BC: tl.constexpr, SP: tl.constexpr):
    """Window scores s(c) = sum over the group's heads of p_h(c), pooled per block: own[j] = max of block j's own
    SP windows, tail[j] = its last window (block j + 1 pools it too). pool [B * KVH, 2, NB] float32."""
    pr = tl.where(valid[:, None] & (rc < n_win)[None, :], tl.exp2(qk - lse[:, None]), 0.0)
    grp = tl.reshape(tl.sum(pr, axis=0), (BC // SP, SP))
    j = c0 // SP + tl.arange(0, BC // SP)
    tail = tl.sum(tl.where(tl.arange(0, SP)[None, :] == SP - 1, grp, 0.0), axis=1)
    tl.store(pool_ptr + bh * 2 * NB + j, tl.max(grp, axis=1), mask=j < NB)
    tl.store(pool_ptr + (bh * 2 + 1) * NB + j, tail, mask=j < NB)


@triton.jit
def _stage1_decode_kernel(q_ptr, k_ptr, ck_ptr, len_ptr, m_ptr, l_ptr, pool_ptr, bar_ptr, qk_scale, NB, n_prog,
                          sq_b, sq_h, sk_b, sk_h, sk_s, sc_b, sc_h, sc_c,
                          KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, KS: tl.constexpr,
                          ST: tl.constexpr, SP: tl.constexpr, CH: tl.constexpr, BC: tl.constexpr,
                          NSPLIT: tl.constexpr, PHASE: tl.constexpr, F32_DOT: tl.constexpr, PDL: tl.constexpr):
    """Program (row x kv head, split sp of CH windows). PHASE 0: everything, the logits kept in registers across
    a grid barrier (BC == CH); 1: compress + per-split (max, sum of exp2); 2: merge + scores + pooling."""
    bh, sp = tl.program_id(0), tl.program_id(1)
    b, h = bh // KVH, bh % KVH
    rg, rd = tl.arange(0, GP), tl.arange(0, D)
    valid = rg < G
    row = bh * GP + rg
    pdl.wait(PDL)
    n = tl.load(len_ptr + b)
    q = _load_rows(q_ptr, b, h * G + rg, tl.zeros((GP,), tl.int32), valid, sq_b, sq_h, 0, D)
    n_win = tl.where(n >= KS, tl.maximum(n - KS, 0) // ST + 1, 0)  # the decode query sees every window
    lo = sp * CH
    c_new = n_win - 1  # the window this step may have completed: its chunk's program writes it
    if PHASE != 2:
        mine = (c_new >= lo) & (c_new < lo + CH)
        lim = tl.where(mine, KS, 0)  # vector masks: the interpreter rejects scalar-bool ones
        cn = tl.where(mine, c_new, 0)
        rw = tl.arange(0, KS)
        kw = tl.load(k_ptr + b * sk_b + h * sk_h + (cn * ST + rw)[:, None] * sk_s + rd[None, :],
                     mask=(rw < lim)[:, None], other=0.0)
        new = (tl.sum(kw.to(tl.float32), axis=0) / KS).to(ck_ptr.dtype.element_ty)
        tl.store(ck_ptr + b * sc_b + h * sc_h + cn * sc_c + rd, new, mask=rd < lim * D)
    if PHASE == 0:
        rc, qk = _decode_logits(q, ck_ptr, b, h, lo, n_win, c_new, new, qk_scale, sc_b, sc_h, sc_c, D, CH, F32_DOT,
                                True)
        m_i = tl.max(qk, axis=1)
        l_i = tl.sum(tl.exp2(qk - tl.where(m_i == float("-inf"), 0.0, m_i)[:, None]), axis=1)
        tl.store(m_ptr + row * NSPLIT + sp, m_i, mask=valid)
        tl.store(l_ptr + row * NSPLIT + sp, l_i, mask=valid)
        _grid_sync(bar_ptr, n_prog)
        pdl.launch_dependents(PDL)
        _pool_store(qk, _merged_lse(m_ptr, l_ptr, row, valid, NSPLIT), valid, rc, n_win, pool_ptr, bh, NB, lo, CH,
                    SP)
    elif PHASE == 1:
        m_i = tl.full((GP,), float("-inf"), tl.float32)
        l_i = tl.zeros((GP,), tl.float32)
        for c0 in range(lo, tl.minimum(lo + CH, n_win), BC):
            rc, qk = _decode_logits(q, ck_ptr, b, h, c0, n_win, c_new, new, qk_scale, sc_b, sc_h, sc_c, D, BC,
                                    F32_DOT, True)
            _p, _alpha, m_i, l_i = online_softmax(qk, m_i, l_i)
        tl.store(m_ptr + row * NSPLIT + sp, m_i, mask=valid)
        tl.store(l_ptr + row * NSPLIT + sp, l_i, mask=valid)
    else:
        lse = _merged_lse(m_ptr, l_ptr, row, valid, NSPLIT)
        for c0 in range(lo, lo + CH, BC):  # every block of the chunk is written (0 past the windows)
            rc, qk = _decode_logits(q, ck_ptr, b, h, c0, n_win, c_new, q, qk_scale, sc_b, sc_h, sc_c, D, BC,
                                    F32_DOT, False)
            _pool_store(qk, lse, valid, rc, n_win, pool_ptr, bh, NB, c0, BC, SP)


@triton.jit
def _pooled_keys(pool_ptr, bh, j, pos, dense, NB, BS: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr,
                 IDXB: tl.constexpr, CHOSEN: tl.constexpr = False):
    """Selection keys of blocks j from stage 1's pool: score(j) = max(own[j], tail[j - 1])."""
    own = tl.load(pool_ptr + bh * 2 * NB + j, mask=j < NB, other=0.0)
    prev = tl.load(pool_ptr + (bh * 2 + 1) * NB + j - 1, mask=(j >= 1) & (j < NB), other=0.0)
    return _keys_from_scores(tl.maximum(own, prev), j, pos, dense, NB, BS, INIT, LOCAL, IDXB, CHOSEN)


@triton.jit
def _rank_in_row(pool_ptr, bh, mine, qb, pos, dense, NB, BS: tl.constexpr, INIT: tl.constexpr,
                 LOCAL: tl.constexpr, IDXB: tl.constexpr, BALL: tl.constexpr, CHOSEN: tl.constexpr):
    """For each key of `mine`, how many of the row's blocks have a larger key (keys are unique: the rank)."""
    rank = tl.zeros(mine.shape, tl.int32)
    for a in range(0, tl.minimum(qb + 1, NB), BALL):  # blocks past the query's own have key -1
        ra = a + tl.arange(0, BALL)
        other = _pooled_keys(pool_ptr, bh, ra, pos, dense, NB, BS, INIT, LOCAL, IDXB, CHOSEN)
        rank += tl.sum((other[None, :] > mine[:, None]).to(tl.int32), axis=1)
    return rank


@triton.jit
def _rank_select_kernel(pool_ptr, idx_ptr, len_ptr, NB, K, TOPK, DENSE_LEN,
                        KVH: tl.constexpr, BS: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr,
                        IDXB: tl.constexpr, BN: tl.constexpr, BALL: tl.constexpr, KP: tl.constexpr,
                        PDL: tl.constexpr):
    """Top-k by rank: program (row x kv head, tile of BN blocks) counts, for each of its blocks, the blocks with a
    larger key (keys are unique) and writes block j to slot rank(j) if rank < k. So the selected blocks fill
    slots 0 .. min(k, qb + 1) - 1, best first, and the rest get -1. k = K below DENSE_LEN tokens (every block
    forced: dense attention through the same kernels, the switch read from the length on the device), else
    TOPK. No sort, no host sync."""
    bh, jt = tl.program_id(0), tl.program_id(1)
    pdl.wait(PDL)
    pos = tl.load(len_ptr + bh // KVH) - 1
    dense = pos + 1 < DENSE_LEN
    qb = pos // BS
    j = jt * BN + tl.arange(0, BN)
    mine = _pooled_keys(pool_ptr, bh, j, pos, dense, NB, BS, INIT, LOCAL, IDXB)
    rank = j  # below DENSE_LEN every block up to the query's is forced and k >= their count: block order will do
    if not dense:
        rank = _rank_in_row(pool_ptr, bh, mine, qb, pos, dense, NB, BS, INIT, LOCAL, IDXB, BALL, False)
    k = tl.where(dense, K, TOPK)
    sel = (rank < k) & (mine >= 0)
    tl.store(idx_ptr + bh * K + tl.where(sel, rank, 0), j, mask=sel)
    slot = tl.arange(0, KP)
    n_sel = tl.where(jt == 0, tl.minimum(k, qb + 1), KP)  # program 0 clears the unused slots
    tl.store(idx_ptr + bh * K + slot, tl.full((KP,), -1, tl.int32), mask=(slot < K) & (slot >= n_sel))


@triton.jit
def _attend_keys(q_ptr, k_ptr, v_ptr, part_ptr, lse_ptr, b, h, rows, split, ks, ok, qk_scale,
                 sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                 NSPLIT: tl.constexpr, F32_DOT: tl.constexpr):
    """The G query heads of kv head h (rows: their partial rows) against the keys ks where ok, as one tile:
    partial output and log-sum-exp into split `split`. Both decode paths' attention step."""
    rg, rd = tl.arange(0, GP), tl.arange(0, D)
    q = _load_rows(q_ptr, b, h * G + rg, tl.zeros((GP,), tl.int32), rg < G, sq_b, sq_h, 0, D)
    k = tl.load(k_ptr + b * sk_b + h * sk_h + ks[:, None] * sk_s + rd[None, :], mask=ok[:, None], other=0.0)
    v = tl.load(v_ptr + b * sv_b + h * sv_h + ks[:, None] * sv_s + rd[None, :], mask=ok[:, None], other=0.0)
    m_i, l_i, acc = _softmax_step(q, k, v, ok[None, :], tl.full((GP,), float("-inf"), tl.float32),
                                  tl.zeros((GP,), tl.float32), tl.zeros((GP, D), tl.float32), qk_scale, F32_DOT)
    out, lse = softmax_result(acc, m_i, l_i)
    tl.store(part_ptr + (rows * NSPLIT + split)[:, None] * D + rd[None, :], out, mask=(rg < G)[:, None])
    tl.store(lse_ptr + rows * NSPLIT + split, lse, mask=rg < G)


@triton.jit
def _decode_attn_kernel(q_ptr, k_ptr, v_ptr, idx_ptr, len_ptr, part_ptr, lse_ptr, qk_scale, K, TOPK, DENSE_LEN,
                        sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
                        KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
                        PB: tl.constexpr, NSPLIT: tl.constexpr, F32_DOT: tl.constexpr, PDL: tl.constexpr):
    """Program (row x kv head, split sp): the selected blocks fill slots 0 .. n_sel - 1 (n_sel from the length
    on the device); split sp attends to slots sp*PB .. sp*PB + PB - 1 as one [PB * BS]-key tile: one gather of K
    and V for the G query heads, no loop, so the program is one load latency deep. Splits past the selection
    only mark their partial empty (lse -inf). Grid sized by the slot capacity: graph-safe."""
    pid, sp = tl.program_id(0), tl.program_id(1)
    b, h = pid // KVH, pid % KVH
    pdl.wait(PDL)
    n = tl.load(len_ptr + b)
    pos = n - 1
    n_sel = tl.minimum(tl.where(n < DENSE_LEN, K, TOPK), pos // BS + 1)
    rg, rs = tl.arange(0, GP), tl.arange(0, PB * BS)
    rows = pid * G + rg  # partials [B * H, NSPLIT, D]
    if sp * PB < n_sel:
        slot = sp * PB + rs // BS
        ks = tl.load(idx_ptr + pid * K + slot, mask=slot < n_sel, other=-1) * BS + rs % BS
        ok = (ks >= 0) & (ks <= pos)
        _attend_keys(q_ptr, k_ptr, v_ptr, part_ptr, lse_ptr, b, h, rows, sp, tl.where(ok, ks, 0), ok, qk_scale,
                     sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, G, GP, D, NSPLIT, F32_DOT)
    else:
        tl.store(lse_ptr + rows * NSPLIT + sp, tl.full((GP,), float("-inf"), tl.float32), mask=rg < G)


@triton.jit
def _attend_block(q_ptr, k_ptr, v_ptr, idx_ptr, part_ptr, lse_ptr, pid, b, h, blk, pos, slot, K, qk_scale,
                  sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                  BS: tl.constexpr, NSPLIT: tl.constexpr, F32_DOT: tl.constexpr):
    """The G query heads of (row, kv head) `pid` against block blk's [BS, D] K/V tile (causal): partial output and
    log-sum-exp into split `slot`, blk into idx[pid, slot]."""
    ks = blk * BS + tl.arange(0, BS)
    _attend_keys(q_ptr, k_ptr, v_ptr, part_ptr, lse_ptr, b, h, pid * G + tl.arange(0, GP), slot, ks, ks <= pos,
                 qk_scale, sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, G, GP, D, NSPLIT, F32_DOT)
    one = tl.arange(0, 1)  # vector stores: the interpreter rejects scalar-bool masks
    tl.store(idx_ptr + pid * K + slot + one, blk + one * 0, mask=slot + one < K)


@triton.jit
def _split_attend_kernel(q_ptr, k_ptr, v_ptr, pool_ptr, idx_ptr, len_ptr, part_ptr, lse_ptr, qk_scale, NB, K, TOPK,
                         DENSE_LEN, sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
                         KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
                         INIT: tl.constexpr, LOCAL: tl.constexpr, IDXB: tl.constexpr, BN: tl.constexpr,
                         BALL: tl.constexpr, NSPLIT: tl.constexpr, F32_DOT: tl.constexpr, PDL: tl.constexpr):
    """Selection and attention of a decode step in one launch, the forced blocks apart from the chosen ones.
    Programs sp < NSPLIT: slot sp of the forced blocks (initial + local window; every block below DENSE_LEN
    tokens), whose block follows from the position alone, no ranking: forced block number sp is attended (one
    K/V tile). Programs sp >= NSPLIT: a tile of BN blocks; each of its non-forced blocks is ranked against the row's non-forced
    blocks (stage 1's pool, keys unique, ties to the lower block) and, if among the top k - n_forced, attended
    into slot n_forced + rank. So the 33 contiguous window blocks are spread over programs (one load deep) and
    only the few chosen blocks of a tile run one after another. Splits n_sel .. NSPLIT - 1 get lse -inf (and
    idx -1 below K).
    Exact when n_forced <= k (forced_blocks(p) <= topk; the caller checks)."""
    pid, sp = tl.program_id(0), tl.program_id(1)
    b, h = pid // KVH, pid % KVH
    pdl.wait(PDL)
    pdl.launch_dependents(PDL)  # the merge may launch and wait
    n = tl.load(len_ptr + b)
    pos = n - 1
    qb = pos // BS
    dense = n < DENSE_LEN
    k = tl.where(dense, K, TOPK)
    n_sel = tl.minimum(k, qb + 1)
    n_init = tl.minimum(INIT, qb + 1)
    lo = tl.where(dense, INIT, tl.maximum(INIT, qb - LOCAL))  # the window's first block past the initial ones
    n_forced = n_init + tl.maximum(qb - lo + 1, 0)
    if sp < NSPLIT:
        if sp < n_forced:
            blk = tl.where(sp < n_init, sp, lo + sp - n_init)
            _attend_block(q_ptr, k_ptr, v_ptr, idx_ptr, part_ptr, lse_ptr, pid, b, h, blk, pos, sp, K, qk_scale,
                          sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, G, GP, D, BS, NSPLIT, F32_DOT)
        elif sp >= n_sel:
            rg = tl.arange(0, GP)
            tl.store(lse_ptr + (pid * G + rg) * NSPLIT + sp, tl.full((GP,), float("-inf"), tl.float32),
                     mask=rg < G)
            one = tl.arange(0, 1)
            tl.store(idx_ptr + pid * K + sp + one, tl.full((1,), -1, tl.int32), mask=sp + one < K)
    else:
        t0 = (sp - NSPLIT) * BN
        k_ch = n_sel - n_forced
        if (t0 <= qb) & (k_ch > 0):
            j = t0 + tl.arange(0, BN)
            mine = _pooled_keys(pool_ptr, pid, j, pos, dense, NB, BS, INIT, LOCAL, IDXB, True)
            rank = _rank_in_row(pool_ptr, pid, mine, qb, pos, dense, NB, BS, INIT, LOCAL, IDXB, BALL, True)
            rank = tl.where((mine >= 0) & (rank < k_ch), rank, -1)
            for i in range(BN):  # a loop, not unrolled: 16 copies of the attention would bloat the kernel
                r = tl.max(tl.where(tl.arange(0, BN) == i, rank, -1), axis=0)
                if r >= 0:
                    _attend_block(q_ptr, k_ptr, v_ptr, idx_ptr, part_ptr, lse_ptr, pid, b, h, t0 + i, pos,
                                  n_forced + r, K, qk_scale, sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, G, GP, D,
                                  BS, NSPLIT, F32_DOT)


def _stage1(q: torch.Tensor, k_cache: torch.Tensor, ck_cache: torch.Tensor, lengths: torch.Tensor,
            p: InfLLMParams, scale: float | None, num_splits: int | None, fused: bool | None,
            barrier: torch.Tensor | None) -> torch.Tensor:
    """Decode stage 1 (with the step's compressed key): the pooled block scores [B * KVH, 2, NB] (own, tail)."""
    bsz, h, _, d = q.shape
    kvh = k_cache.shape[1]
    g, gp = h // kvh, max(16, triton.next_power_of_2(h // kvh))
    nb = triton.cdiv(k_cache.shape[2], p.block_size)
    sp = p.block_size // p.kernel_stride
    assert sp & (sp - 1) == 0 and nb < (1 << 16), "block_size / kernel_stride must be a power of 2; NB < 2^16"
    dev, n_sm = q.device, _sm_count(q.device)
    # stage-1 splits: at most one program per SM (the barrier needs them all resident), >= 16 windows each
    want = num_splits or max(1, min(64, n_sm // (bsz * kvh), triton.cdiv(nb * sp, 16)))
    nsplit = 1 << (want.bit_length() - 1)
    ch = max(16, sp, triton.next_power_of_2(triton.cdiv(nb * sp, nsplit)))  # windows per split
    if fused is None:
        fused = not _interp() and bsz * kvh * nsplit <= n_sm and ch <= 256
    on = pdl.enabled(dev)
    stats = torch.empty(2, bsz * kvh * gp, nsplit, dtype=torch.float32, device=dev)
    pool = torch.empty(bsz * kvh, 2, nb, dtype=torch.float32, device=dev)
    bar = barrier if barrier is not None else _barrier(dev)
    scale = (scale if scale is not None else d ** -0.5) * LOG2E
    for phase in ((0,) if fused else (1, 2)):
        _stage1_decode_kernel[(bsz * kvh, nsplit)](
            q, k_cache, ck_cache, lengths, stats[0], stats[1], pool, bar, scale, nb, bsz * kvh * nsplit,
            q.stride(0), q.stride(1), *k_cache.stride()[:3], *ck_cache.stride()[:3], KVH=kvh, G=g, GP=gp, D=d,
            KS=p.kernel_size, ST=p.kernel_stride, SP=sp, CH=ch, BC=ch if fused else min(ch, 64), NSPLIT=nsplit,
            PHASE=phase, F32_DOT=_interp() or q.dtype == torch.float32, PDL=on, num_warps=4,
            **pdl.launch_kwargs(on))
    return pool


RANK_TILE, RANK_WARPS = 16, 4  # blocks a rank program ranks against the whole row; its warps


def select_decode(q: torch.Tensor, k_cache: torch.Tensor, ck_cache: torch.Tensor, lengths: torch.Tensor,
                  p: InfLLMParams, scale: float | None = None, dense_len: int = 0, num_splits: int | None = None,
                  fused: bool | None = None, barrier: torch.Tensor | None = None) -> torch.Tensor:
    """Stage 1 and the top-k of a decode step: q [B, H, 1, D] (the selection queries), k_cache [B, KVH, S, D]
    (the keys the compressed keys come from: the step writes its newest window into ck_cache [B, KVH, NC, D])
    -> int32 [B, KVH, 1, K] selected blocks filling slots 0 .. n_sel - 1, -1 after; rows shorter than dense_len
    select every block (K = decode_slots(...)), best first. Graph-safe, no host sync."""
    pool = _stage1(q, k_cache, ck_cache, lengths, p, scale, num_splits, fused, barrier)
    bsz, kvh, nb = q.shape[0], k_cache.shape[1], pool.shape[-1]
    on = pdl.enabled(q.device)
    kk = decode_slots(p, nb, dense_len)
    idx = torch.empty(bsz, kvh, 1, kk, dtype=torch.int32, device=q.device)
    bn = RANK_TILE
    _rank_select_kernel[(bsz * kvh, triton.cdiv(nb, bn))](
        pool, idx, lengths, nb, kk, min(p.topk, nb), dense_len, KVH=kvh, BS=p.block_size, INIT=p.init_blocks,
        LOCAL=p.local_blocks, IDXB=IDX_BITS, BN=bn,
        BALL=min(2048, triton.next_power_of_2(nb)),  # one pass up to 128K tokens: one load deep
        KP=triton.next_power_of_2(kk), PDL=on, num_warps=RANK_WARPS, **pdl.launch_kwargs(on))
    return idx


def sparse_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, idx: torch.Tensor,
                            lengths: torch.Tensor, p: InfLLMParams, dense_len: int = 0,
                            scale: float | None = None, blocks_per_split: int = 1) -> torch.Tensor:
    """Stage 2 of a decode step from a given selection: q [B, H, 1, D], caches [B, KVH, S, D], idx int32
    [B, KVH, 1, K] from select_decode (filled from slot 0) -> [B, H, 1, D]. Two launches (attention, merge)."""
    bsz, h, _, d = q.shape
    kvh = k_cache.shape[1]
    g, kk = h // kvh, idx.shape[-1]
    nsplit = triton.next_power_of_2(triton.cdiv(kk, blocks_per_split))
    scale = scale if scale is not None else d ** -0.5
    on = pdl.enabled(q.device)
    part = torch.empty(bsz * h, nsplit, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(bsz * h, nsplit, dtype=torch.float32, device=q.device)
    _decode_attn_kernel[(bsz * kvh, nsplit)](
        q, k_cache, v_cache, idx.contiguous(), lengths, part, lse, scale * LOG2E, kk, min(p.topk, kk), dense_len,
        q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3], KVH=kvh, G=g,
        GP=max(16, triton.next_power_of_2(g)), D=d, BS=p.block_size, PB=blocks_per_split, NSPLIT=nsplit,
        F32_DOT=_interp() or q.dtype == torch.float32, PDL=on, num_warps=4, **pdl.launch_kwargs(on))
    return _merge(part, lse, q)


def _split_attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pool: torch.Tensor,
                  lengths: torch.Tensor, p: InfLLMParams, dense_len: int, scale: float | None) -> tuple:
    """_split_attend_kernel: (idx [B, KVH, 1, K] in slot order (forced first, then chosen by rank), partials, lse)."""
    bsz, h, _, d = q.shape
    kvh = k_cache.shape[1]
    g, nb = h // kvh, pool.shape[-1]
    kk = decode_slots(p, nb, dense_len)
    nsplit = triton.next_power_of_2(kk)  # the merge's loop wants a power of 2
    dev, on = q.device, pdl.enabled(q.device)
    idx = torch.empty(bsz, kvh, 1, kk, dtype=torch.int32, device=dev)
    part = torch.empty(bsz * h, nsplit, d, dtype=torch.float32, device=dev)
    lse = torch.empty(bsz * h, nsplit, dtype=torch.float32, device=dev)
    scale = scale if scale is not None else d ** -0.5
    bn = SPLIT_TILE
    _split_attend_kernel[(bsz * kvh, nsplit + triton.cdiv(nb, bn))](
        q, k_cache, v_cache, pool, idx, lengths, part, lse, scale * LOG2E, nb, kk, min(p.topk, nb), dense_len,
        q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3], KVH=kvh, G=g,
        GP=max(16, triton.next_power_of_2(g)), D=d, BS=p.block_size, INIT=p.init_blocks, LOCAL=p.local_blocks,
        IDXB=IDX_BITS, BN=bn, BALL=min(2048, triton.next_power_of_2(nb)), NSPLIT=nsplit,
        F32_DOT=_interp() or q.dtype == torch.float32, PDL=on, num_warps=SPLIT_WARPS, **pdl.launch_kwargs(on))
    return idx, part, lse


SPLIT_TILE, SPLIT_WARPS = 16, 4  # blocks a ranking program of _split_attend_kernel ranks; its warps


def sparse_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, ck_cache: torch.Tensor,
                  lengths: torch.Tensor, p: InfLLMParams, q_select: torch.Tensor | None = None,
                  k_select: torch.Tensor | None = None, scale: float | None = None, dense_len: int = 0,
                  barrier: torch.Tensor | None = None, method: str = "rank") -> torch.Tensor:
    """One decode step: q [B, H, 1, D], caches [B, KVH, S, D], ck_cache [B, KVH, NC, D] -> [B, H, 1, D].
    Writes the step's compressed key itself (from k_select, the pre-rotary keys when use_nope, else k_cache);
    selects with q_select (else q). Rows shorter than dense_len attend to every block. Graph-safe.
    method "rank" (default): stage 1, rank selection, attention, merge = 4 launches. "split": stage 1, one
    kernel that attends to the forced blocks by position and ranks + attends to the chosen ones
    (_split_attend_kernel), merge = 3 launches; measured on the H200 (one run, 128K cache): 24.8 vs 19.9 us at
    128K tokens (a tile's chosen blocks go one after another), 15.4 vs 21.7 us at 6K tokens (below dense_len).
    (A third form, top-k by a radix threshold search inside the attention kernel, measured 26-36 us at 128K:
    commit 6902182, removed.)"""
    qs, ks = q if q_select is None else q_select, k_cache if k_select is None else k_select
    if method == "split" and forced_blocks(p) > p.topk:
        method = "rank"  # forced blocks could be more than k: not every one of them is selected
    if method == "split":
        pool = _stage1(qs, ks, ck_cache, lengths, p, scale, None, None, barrier)
        return _merge(*_split_attend(q, k_cache, v_cache, pool, lengths, p, dense_len, scale)[1:], q)
    if method == "rank":
        idx = select_decode(qs, ks, ck_cache, lengths, p, scale, dense_len, barrier=barrier)
        return sparse_decode_attention(q, k_cache, v_cache, idx, lengths, p, dense_len, scale)
    raise ValueError(f"sparse_decode: method {method!r} is not 'rank' or 'split'")
