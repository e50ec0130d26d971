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

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
IDX_BITS = 20  # selection keys are (score bits << IDX_BITS) | (2^IDX_BITS - 1 - block): unique per block


@dataclass(frozen=True)
class InfLLMParams:
    """The checkpoint's `sparse_config` (defaults: the MiniCPM4 remote code's `.get()` defaults)."""
    kernel_size: int = 32
    kernel_stride: int = 16
    init_blocks: int = 1
    block_size: int = 64
    window_size: int = 2048
    topk: int = 64
    use_nope: bool = False
    dense_len: int = 8192

    @classmethod
    def from_config(cls, sc: dict) -> "InfLLMParams":
        known = {f: sc[f] for f in cls.__dataclass_fields__ if f in sc}
        p = cls(**known)
        if p.block_size % p.kernel_stride or p.kernel_size % p.kernel_stride:
            raise ValueError(f"sparse_config: block_size ({p.block_size}) and kernel_size ({p.kernel_size}) must be "
                             f"multiples of kernel_stride ({p.kernel_stride})")
        return p

    @property
    def local_blocks(self) -> int:
        return self.window_size // self.block_size

    def num_windows(self, n_tokens: int) -> int:
        """Complete compressed-key windows among the first n_tokens tokens."""
        return 0 if n_tokens < self.kernel_size else (n_tokens - self.kernel_size) // self.kernel_stride + 1


# ----------------------------------------------------------------------------------------------------------
# references (clear, slow, exact; float32 math)

def compress_keys_ref(k: torch.Tensor, n_tokens: int, p: InfLLMParams) -> torch.Tensor:
    """k [KVH, >= n_tokens, D] -> compressed keys [KVH, NC, D] (NC = complete windows), k's dtype."""
    nc = p.num_windows(n_tokens)
    if nc == 0:
        return k.new_zeros(k.shape[0], 0, k.shape[2])
    starts = torch.arange(nc, device=k.device) * p.kernel_stride
    idx = starts[:, None] + torch.arange(p.kernel_size, device=k.device)[None]  # [NC, KS]
    return k[:, idx].float().mean(dim=2).to(k.dtype)


def block_scores_ref(q: torch.Tensor, ck: torch.Tensor, length: int, num_blocks: int, p: InfLLMParams,
                     scale: float) -> torch.Tensor:
    """One row. q [H, T, D] (positions length-T .. length-1), ck [KVH, >= NC, D] -> float32 [KVH, T, NB]
    block scores: +inf forced, -inf for blocks past the query's own (never selectable)."""
    h, t, _ = q.shape
    kvh = ck.shape[0]
    g = h // kvh
    pos = torch.arange(length - t, length, device=q.device)
    nc = p.num_windows(length)
    logits = (q.float() @ ck[:, :nc].float().repeat_interleave(g, 0).transpose(1, 2)) * scale  # [H, T, NC]
    seen = torch.tensor([p.num_windows(int(i) + 1) for i in pos], device=q.device)  # windows ending <= i
    visible = torch.arange(nc, device=q.device)[None, :] < seen[:, None]  # [T, NC]
    probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0)
    s = probs.view(kvh, g, t, nc).sum(1)  # [KVH, T, NC]: the group's heads share one score
    sp = p.block_size // p.kernel_stride
    out = torch.zeros(kvh, t, num_blocks, device=q.device)
    for b in range(num_blocks):  # max_pooling_1d: kernel sp + 1, stride sp, padding 1
        lo, hi = max(b * sp - 1, 0), min(b * sp + sp, nc)
        if hi > lo:
            out[..., b] = s[..., lo:hi].amax(-1).clamp_min(0.0)
    qb = (pos // p.block_size)[:, None]  # [T, 1]
    blk = torch.arange(num_blocks, device=q.device)[None, :]
    forced = (blk < p.init_blocks) | ((blk <= qb) & (blk + p.local_blocks >= qb))
    out = out.masked_fill(forced[None], float("inf"))
    return out.masked_fill((blk > qb)[None], float("-inf"))


def select_blocks_ref(q: torch.Tensor, ck: torch.Tensor, lengths: list[int], num_blocks: int, p: InfLLMParams,
                      scale: float | None = None) -> torch.Tensor:
    """q [B, H, T, D], ck [B, KVH, NC_cap, D] -> bool [B, KVH, T, NB]: the blocks each query token attends to.
    The top-k of the block scores; among equal scores the lower block index wins."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    out = []
    for b, n in enumerate(lengths):
        sc = block_scores_ref(q[b], ck[b], n, num_blocks, p, scale)  # [KVH, T, NB]
        k = min(p.topk, num_blocks)
        # stable descending sort = lower index first among ties
        order = torch.sort(sc, dim=-1, descending=True, stable=True).indices[..., :k]
        mask = torch.zeros_like(sc, dtype=torch.bool).scatter_(-1, order, True)
        out.append(mask & (sc > float("-inf")))
    return torch.stack(out)


def sparse_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: torch.Tensor,
                         lengths: list[int], block_size: int, scale: float | None = None) -> torch.Tensor:
    """q [B, H, T, D], k/v caches [B, KVH, S, D], blocks bool [B, KVH, T, NB] -> [B, H, T, D]:
    attention over the tokens of the selected blocks, causal."""
    bsz, h, t, d = q.shape
    kvh = k.shape[1]
    g = h // kvh
    scale = scale if scale is not None else d ** -0.5
    out = torch.empty_like(q)
    for b, n in enumerate(lengths):
        pos = torch.arange(n - t, n, device=q.device)
        tok = blocks[b].repeat_interleave(block_size, -1)[..., :n]  # [KVH, T, n]
        keep = tok & (torch.arange(n, device=q.device)[None, :] <= pos[:, None])[None]
        kk = k[b, :, :n].float().repeat_interleave(g, 0)
        vv = v[b, :, :n].float().repeat_interleave(g, 0)
        s = (q[b].float() @ kk.transpose(1, 2)) * scale  # [H, T, n]
        s = s.masked_fill(~keep.repeat_interleave(g, 0), float("-inf"))
        out[b] = (torch.softmax(s, -1) @ vv).to(q.dtype)
    return out


def idx_to_mask(idx: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Selected block indices [..., K] (-1 = none) -> bool [..., NB]."""
    mask = torch.zeros(*idx.shape[:-1], num_blocks + 1, dtype=torch.bool, device=idx.device)
    mask.scatter_(-1, torch.where(idx < 0, num_blocks, idx).long(), True)
    return mask[..., :num_blocks]


# ----------------------------------------------------------------------------------------------------------
# kernels

def _interp() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


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
def _lse_kernel(q_ptr, ck_ptr, len_ptr, m_ptr, l_ptr, qk_scale, chunk, T, NQT,
                sq_b, sq_h, sq_t, sc_b, sc_h, sc_c,
                KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BQ: tl.constexpr, D: tl.constexpr,
                BC: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr, NSPLIT: tl.constexpr, F32_DOT: tl.constexpr):
    """Stage 1, pass 1: per query row (token x head) and split of the compressed axis, the running max and sum
    of exp2 of the logits (log2 units)."""
    sp = tl.program_id(1)
    b, h, t, hq, valid, seen, n_win = _row_setup(tl.program_id(0), len_ptr, T, KVH, NQT, BQ, GP, G, KS, ST)
    rd = tl.arange(0, D)
    q = tl.load(q_ptr + b * sq_b + (h * G + hq)[:, None] * sq_h + t[:, None] * sq_t + rd[None, :],
                mask=valid[:, None], other=0.0)
    if F32_DOT:
        q = q.to(tl.float32)
    m_i = tl.full((BQ * GP,), float("-inf"), tl.float32)
    l_i = tl.zeros((BQ * GP,), tl.float32)
    for c0 in range(sp * chunk, tl.minimum(sp * chunk + chunk, n_win), BC):
        rc = c0 + tl.arange(0, BC)
        ck = tl.load(ck_ptr + b * sc_b + h * sc_h + rc[:, None] * sc_c + rd[None, :], mask=(rc < n_win)[:, None],
                     other=0.0)
        if F32_DOT:
            qk = tl.dot(q, tl.trans(ck.to(tl.float32)), input_precision="ieee") * qk_scale
        else:
            qk = tl.dot(q, tl.trans(ck.to(q.dtype))) * qk_scale
        qk = tl.where(rc[None, :] < seen[:, None], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that see nothing yet stay at 0 mass
        l_i = l_i * tl.exp2(m_i - m_use) + tl.sum(tl.exp2(qk - m_use[:, None]), axis=1)
        m_i = m_new
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
    rd = tl.arange(0, D)
    q = tl.load(q_ptr + b * sq_b + (h * G + hq)[:, None] * sq_h + t[:, None] * sq_t + rd[None, :],
                mask=valid[:, None], other=0.0)
    if F32_DOT:
        q = q.to(tl.float32)
    tq = tl.program_id(0) % NQT * BQ + tl.arange(0, BQ)
    for c0 in range(sp * chunk, tl.minimum(sp * chunk + chunk, n_win), BC):
        rc = c0 + tl.arange(0, BC)
        ck = tl.load(ck_ptr + b * sc_b + h * sc_h + rc[:, None] * sc_c + rd[None, :], mask=(rc < n_win)[:, None],
                     other=0.0)
        if F32_DOT:
            qk = tl.dot(q, tl.trans(ck.to(tl.float32)), input_precision="ieee") * qk_scale
        else:
            qk = tl.dot(q, tl.trans(ck.to(q.dtype))) * qk_scale
        ok = (rc[None, :] < seen[:, None]) & valid[:, None]
        pr = tl.where(ok, tl.exp2(qk - lse[:, None]), 0.0)
        s = tl.sum(tl.reshape(pr, (BQ, GP, BC)), axis=1)  # [BQ, BC]: sum over the group's heads
        tl.store(s_ptr + ((b * KVH + h) * T + tq[:, None]) * NCAP + rc[None, :], s,
                 mask=(tq[:, None] < T) & (rc[None, :] < n_win))


@triton.jit
def _block_keys(s_ptr, row, j, pos, NB, SP: tl.constexpr, SPP: tl.constexpr, BS: tl.constexpr,
                INIT: tl.constexpr, LOCAL: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr, IDXB: tl.constexpr,
                NCAP):
    """Selection keys of blocks j for the query at pos: pool window scores (max over windows j*SP-1 ..
    j*SP+SP-1), force the initial and local blocks, key = (score bits << IDXB) | (2^IDXB - 1 - j), -1 past the
    query's block. Scores are >= 0, so their float bits order like the floats; the index part breaks ties."""
    seen = tl.where(pos + 1 >= KS, tl.maximum(pos + 1 - KS, 0) // ST + 1, 0)
    qb = pos // BS
    w = tl.arange(0, SPP)
    c = j[:, None] * SP - 1 + w[None, :]
    ok = (w[None, :] <= SP) & (c >= 0) & (c < seen)
    s = tl.load(s_ptr + row * NCAP + tl.where(ok, c, 0), mask=ok, other=0.0)
    score = tl.maximum(tl.max(s, axis=1), 0.0)
    forced = (j < INIT) | ((j <= qb) & (j + LOCAL >= qb))
    score = tl.where(forced, float("inf"), score)
    key = (score.to(tl.int32, bitcast=True).to(tl.int64) << IDXB) | ((1 << IDXB) - 1 - j).to(tl.int64)
    return tl.where((j <= qb) & (j < NB), key, -1)


@triton.jit
def _keys_kernel(s_ptr, key_ptr, len_ptr, T, NCAP, NB,
                 KVH: tl.constexpr, SP: tl.constexpr, SPP: tl.constexpr, BNB: tl.constexpr, BS: tl.constexpr,
                 INIT: tl.constexpr, LOCAL: tl.constexpr, KS: tl.constexpr, ST: tl.constexpr,
                 IDXB: tl.constexpr):
    """All selection keys [rows, NB] (then torch.topk): the path for many query rows (prefill)."""
    row, jt = tl.program_id(0), tl.program_id(1)
    pos = tl.load(len_ptr + row // (KVH * T)) - T + row % T
    j = jt * BNB + tl.arange(0, BNB)
    key = _block_keys(s_ptr, row, j, pos, NB, SP, SPP, BS, INIT, LOCAL, KS, ST, IDXB, NCAP)
    tl.store(key_ptr + row * NB + j, key, mask=j < NB)


@triton.jit
def _rank_select_kernel(key_ptr, idx_ptr, len_ptr, T, NB, K, KVH: tl.constexpr, BS: tl.constexpr,
                        BN: tl.constexpr, BALL: tl.constexpr, KP: tl.constexpr):
    """Top-K by rank, for few query rows (decode): program (row, tile of BN blocks) counts, for each of its
    blocks, the blocks with a larger key (keys are unique), and writes block j to slot rank(j) if rank < K.
    Slots past the query's block count (qb + 1 valid blocks) get -1. No sort, no host sync."""
    row, jt = tl.program_id(0), tl.program_id(1)
    pos = tl.load(len_ptr + row // (KVH * T)) - T + row % T
    j = jt * BN + tl.arange(0, BN)
    mine = tl.load(key_ptr + row * NB + j, mask=j < NB, other=-1)
    rank = tl.zeros((BN,), tl.int32)
    for a in range(0, NB, BALL):
        ra = a + tl.arange(0, BALL)
        other = tl.load(key_ptr + row * NB + ra, mask=ra < NB, other=-1)
        rank += tl.sum((other[None, :] > mine[:, None]).to(tl.int32), axis=1)
    sel = (rank < K) & (mine >= 0)
    tl.store(idx_ptr + row * K + tl.where(sel, rank, 0), j, mask=sel)
    slot = tl.arange(0, KP)
    tl.store(idx_ptr + row * K + slot, tl.full((KP,), -1, tl.int32),
             mask=(slot < K) & (slot > tl.where(jt == 0, pos // BS, KP)))  # program 0 only


def select_blocks(q: torch.Tensor, ck_cache: torch.Tensor, lengths: torch.Tensor, num_blocks: int,
                  p: InfLLMParams, scale: float | None = None, num_splits: int | None = None,
                  q_chunk: int = 2048, rows: int = 64, num_warps: int = 4) -> torch.Tensor:
    """q [B, H, T, D] (last dim contiguous), ck_cache [B, KVH, NC_cap, D], lengths int32 [B] (the row's last
    query is at lengths - 1) -> int32 [B, KVH, T, K] selected blocks (-1 = none). Long T runs in q_chunk slices
    to bound the [T, NC] score scratch."""
    bsz, h, t, d = q.shape
    if t > q_chunk:
        parts = [select_blocks(q[:, :, s:s + q_chunk], ck_cache, lengths - (t - min(s + q_chunk, t)), num_blocks,
                               p, scale, num_splits, q_chunk, rows, num_warps) for s in range(0, t, q_chunk)]
        return torch.cat(parts, dim=2)
    kvh, ncap = ck_cache.shape[1], ck_cache.shape[2]
    g = h // kvh
    gp = triton.next_power_of_2(g)
    # query tokens per program: BQ * GP rows (>= 16 for tl.dot), up to 64 rows in prefill
    bq = max(1, 16 // gp) if t == 1 else max(1, 16 // gp, min(triton.next_power_of_2(t), rows // gp))
    nqt = triton.cdiv(t, bq)
    bc = 64
    # splits of the compressed axis: enough programs to fill the GPU, no more than there are key tiles
    nsplit = num_splits or max(1, min(64, triton.next_power_of_2(triton.cdiv(264, bsz * kvh * nqt)),
                                      triton.next_power_of_2(triton.cdiv(ncap, bc))))
    chunk = triton.cdiv(triton.cdiv(ncap, nsplit), bc) * bc
    scale = scale if scale is not None else d ** -0.5
    dev = q.device
    m = torch.empty(bsz * kvh * t * gp * nsplit, dtype=torch.float32, device=dev)
    l = torch.empty_like(m)
    s = torch.empty(bsz, kvh, t, ncap, dtype=torch.float32, device=dev)
    f32 = _interp() or q.dtype == torch.float32
    common = dict(KVH=kvh, G=g, GP=gp, BQ=bq, D=d, BC=bc, KS=p.kernel_size, ST=p.kernel_stride, NSPLIT=nsplit,
                  F32_DOT=f32, num_warps=num_warps)
    strides = (q.stride(0), q.stride(1), q.stride(2), *ck_cache.stride()[:3])
    _lse_kernel[(bsz * kvh * nqt, nsplit)](q, ck_cache, lengths, m, l, scale * LOG2E, chunk, t, nqt, *strides,
                                           **common)
    _score_kernel[(bsz * kvh * nqt, nsplit)](q, ck_cache, lengths, m, l, s, scale * LOG2E, chunk, t, nqt, ncap,
                                             *strides, **common)
    sp = p.block_size // p.kernel_stride
    assert num_blocks < (1 << IDX_BITS) - 1
    kk = min(p.topk, num_blocks)
    pool = dict(KVH=kvh, SP=sp, SPP=triton.next_power_of_2(sp + 1), BS=p.block_size, INIT=p.init_blocks,
                LOCAL=p.local_blocks, KS=p.kernel_size, ST=p.kernel_stride, IDXB=IDX_BITS, num_warps=4)
    keys = torch.empty(bsz, kvh, t, num_blocks, dtype=torch.int64, device=dev)
    bnb = min(256, triton.next_power_of_2(num_blocks))
    _keys_kernel[(bsz * kvh * t, triton.cdiv(num_blocks, bnb))](s, keys, lengths, t, ncap, num_blocks, BNB=bnb,
                                                                **pool)
    if bsz * kvh * t <= 64:  # decode: selection by rank, in one launch (torch.topk takes several)
        idx = torch.empty(bsz, kvh, t, kk, dtype=torch.int32, device=dev)
        bn = 16
        _rank_select_kernel[(bsz * kvh * t, triton.cdiv(num_blocks, bn))](
            keys, idx, lengths, t, num_blocks, kk, KVH=kvh, BS=p.block_size, BN=bn, BALL=512,
            KP=triton.next_power_of_2(kk), num_warps=4)
        return idx
    vals, idx = torch.topk(keys, kk, dim=-1, sorted=False)
    return torch.where(vals >= 0, idx, -1).to(torch.int32)


@triton.jit
def _sparse_attn_kernel(q_ptr, k_ptr, v_ptr, idx_ptr, len_ptr, o_ptr, lse_ptr, qk_scale, per_split, T,
                        sq_b, sq_h, sq_t, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
                        KVH: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
                        K: tl.constexpr, NSPLIT: tl.constexpr, F32_DOT: tl.constexpr, PAIR: tl.constexpr):
    """Stage 2: program (row x kv head x token, split of the selected list). Each selected block's K/V tile is
    loaded once for the G query heads of the group; online softmax; partial output + log-sum-exp (log2)."""
    pid, sp = tl.program_id(0), tl.program_id(1)
    b, rest = pid // (KVH * T), pid % (KVH * T)
    h, t = rest // T, rest % T
    n = tl.load(len_ptr + b)
    pos = n - T + t
    rg, rd, rs = tl.arange(0, GP), tl.arange(0, D), tl.arange(0, PAIR * BS)
    q = tl.load(q_ptr + b * sq_b + (h * G + rg)[:, None] * sq_h + t * sq_t + rd[None, :], mask=(rg < G)[:, None],
                other=0.0)
    if F32_DOT:
        q = q.to(tl.float32)
    m_i = tl.full((GP,), float("-inf"), tl.float32)
    l_i = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, D), tl.float32)
    j_end = tl.minimum(sp * per_split + per_split, K)
    for j in range(sp * per_split, j_end, PAIR):  # PAIR selected blocks per iteration: PAIR * BS keys
        slot = j + rs // BS
        blk = tl.load(idx_ptr + pid * K + slot, mask=slot < j_end, other=-1)
        ks = blk * BS + rs % BS
        ok = (blk >= 0) & (ks <= pos)  # blk -1: an empty slot
        ks = tl.where(ok, ks, 0)  # in-bounds addresses even where masked
        k = tl.load(k_ptr + b * sk_b + h * sk_h + ks[:, None] * sk_s + rd[None, :], mask=ok[:, None], other=0.0)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + ks[:, None] * sv_s + rd[None, :], mask=ok[:, None], other=0.0)
        if F32_DOT:
            qk = tl.dot(q, tl.trans(k.to(tl.float32)), input_precision="ieee") * qk_scale
        else:
            qk = tl.dot(q, tl.trans(k.to(q.dtype))) * qk_scale
        qk = tl.where(ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        pr = tl.exp2(qk - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(pr, axis=1)
        if F32_DOT:
            acc = acc * alpha[:, None] + tl.dot(pr, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(pr.to(q.dtype), v.to(q.dtype))
        m_i = m_new
    seen = l_i > 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
    hq = KVH * G
    prow = ((b * T + t) * hq + h * G + rg) * NSPLIT + sp  # partials [B * T, Hq, NSPLIT, D]
    tl.store(o_ptr + prow[:, None] * D + rd[None, :], out.to(o_ptr.dtype.element_ty), mask=(rg < G)[:, None])
    tl.store(lse_ptr + prow, lse, mask=rg < G)


@triton.jit
def _merge_kernel(o_ptr, lse_ptr, out_ptr, D: tl.constexpr, NSPLIT: tl.constexpr):
    """Program per (token, head): weight the splits' partial outputs by exp2(lse - max). Every token has at
    least its own position selected, so some split is finite."""
    row = tl.program_id(0)
    rs, rd = tl.arange(0, NSPLIT), tl.arange(0, D)
    lse = tl.load(lse_ptr + row * NSPLIT + rs)
    w = tl.exp2(lse - tl.max(lse, axis=0))
    o = tl.load(o_ptr + (row * NSPLIT + rs)[:, None] * D + rd[None, :])
    out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(out_ptr + row * D + rd, out.to(out_ptr.dtype.element_ty))


def sparse_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, idx: torch.Tensor,
                     lengths: torch.Tensor, block_size: int, scale: float | None = None,
                     num_splits: int | None = None, pair: int = 1, num_warps: int = 4) -> torch.Tensor:
    """q [B, H, T, D], caches [B, KVH, S, D], idx int32 [B, KVH, T, K] (-1 = none) -> [B, H, T, D]."""
    bsz, h, t, d = q.shape
    kvh = k_cache.shape[1]
    g = h // kvh
    kk = idx.shape[-1]
    idx = idx.contiguous()
    want = min(32, triton.next_power_of_2(triton.cdiv(264, bsz * kvh * t)), kk)
    nsplit = num_splits or 1 << (want.bit_length() - 1)  # a power of 2 (the merge kernel's arange)
    per = triton.cdiv(kk, nsplit)
    scale = scale if scale is not None else d ** -0.5
    out = torch.empty(bsz, t, h, d, dtype=q.dtype, device=q.device)
    # one split (long prefill): the kernel's partial rows are exactly out's [B * T, H, D] rows, no merge
    part = out if nsplit == 1 else torch.empty(bsz * t, h, nsplit, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(bsz * t, h, nsplit, dtype=torch.float32, device=q.device)
    _sparse_attn_kernel[(bsz * kvh * t, nsplit)](
        q, k_cache, v_cache, idx, lengths, part, lse, scale * LOG2E, per, t, q.stride(0), q.stride(1), q.stride(2),
        *k_cache.stride()[:3], *v_cache.stride()[:3], KVH=kvh, G=g, GP=max(16, triton.next_power_of_2(g)), D=d,
        BS=block_size, K=kk, NSPLIT=nsplit, F32_DOT=_interp() or q.dtype == torch.float32, PAIR=pair,
        num_warps=num_warps)
    if nsplit > 1:
        _merge_kernel[(bsz * t * h,)](part, lse, out, D=d, NSPLIT=nsplit)
    return out.transpose(1, 2)


def infllm_v2_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, ck_cache: torch.Tensor,
                        lengths: torch.Tensor, p: InfLLMParams, q_select: torch.Tensor | None = None,
                        scale: float | None = None) -> torch.Tensor:
    """The sparse path: select blocks (from q_select, the pre-rotary queries when use_nope, else q) and attend.
    q [B, H, T, D], caches [B, KVH, S, D], ck_cache [B, KVH, NC_cap, D] already holding this step's windows."""
    nb = triton.cdiv(k_cache.shape[2], p.block_size)
    idx = select_blocks(q if q_select is None else q_select, ck_cache, lengths, nb, p, scale)
    return sparse_attention(q, k_cache, v_cache, idx, lengths, p.block_size, scale)
