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

from engine.kernels import pdl
from engine.kernels.decode_attention import online_softmax, softmax_result

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


# shared pieces of the kernels below

@triton.jit
def _dot(a, b, F32_DOT: tl.constexpr):
    """a @ b on tensor cores in b's dtype (bf16), or exact fp32 (fp32 models; the CPU interpreter, whose bf16
    tl.dot is wrong)."""
    if F32_DOT:
        r = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        r = tl.dot(a.to(b.dtype), b)
    return r


@triton.jit
def _load_rows(q_ptr, b, heads, t, valid, sq_b, sq_h, sq_t, D: tl.constexpr):
    """Query rows [R, D]: row r is query head heads[r] of token t[r] of batch row b."""
    rd = tl.arange(0, D)
    return tl.load(q_ptr + b * sq_b + heads[:, None] * sq_h + t[:, None] * sq_t + rd[None, :], mask=valid[:, None],
                   other=0.0)


@triton.jit
def _softmax_step(q, k, v, ok, m_i, l_i, acc, qk_scale, F32_DOT: tl.constexpr):
    """One key tile of an online softmax (log2 units): q [R, D], k/v [N, D], ok [R, N] which keys count.
    Rows that have seen no key yet keep zero mass."""
    qk = tl.where(ok, _dot(q, tl.trans(k), F32_DOT) * qk_scale, float("-inf"))
    pr, alpha, m_i, l_i = online_softmax(qk, m_i, l_i)
    return m_i, l_i, acc * alpha[:, None] + _dot(pr, v, F32_DOT)


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


@triton.jit
def _merge_kernel(o_ptr, lse_ptr, out_ptr, D: tl.constexpr, NSPLIT: tl.constexpr, PDL: tl.constexpr = False):
    """Program per (token, head) row: weight its splits' partial outputs [NSPLIT, D] by exp2(lse - max), as
    flash-decoding does. Splits with lse -inf (nothing attended) count 0 and are not read; every row has its
    own position selected, so some split is finite."""
    row = tl.program_id(0)
    pdl.wait(PDL)
    pdl.launch_dependents(PDL)  # a small grid: let the next kernel start launching
    rs, rd = tl.arange(0, NSPLIT), tl.arange(0, D)
    lse = tl.load(lse_ptr + row * NSPLIT + rs)
    live = lse > float("-inf")
    w = tl.where(live, tl.exp2(lse - tl.max(lse, axis=0)), 0.0)
    o = tl.load(o_ptr + (row * NSPLIT + rs)[:, None] * D + rd[None, :], mask=live[:, None], other=0.0)
    out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(out_ptr + row * D + rd, out.to(out_ptr.dtype.element_ty))


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


# ----------------------------------------------------------------------------------------------------------
# decode (T == 1): four launches, graph-safe, no host sync
#   1. stage 1 (+ the newest compressed key): per (row x kv head, split of the windows) the logits of the G query
#      heads; a grid-wide barrier to merge the splits' softmax statistics; then each split's windows' scores,
#      pooled per block (`own` max and `tail` window, combined by the next kernel). Without the barrier (the CPU
#      interpreter runs programs one by one; grids larger than the GPU) the same kernel runs twice, by phase.
#   2. top-k by rank into slots 0 .. n_sel - 1 (the on-device dense switch);  3. attention;  4. merge.
#   (A fused select + attend kernel, one program per tile of blocks ranking its own blocks, measured 170 us at
#   128K on the H200: far slower than the rank kernel + attention, so they stay separate.)

BAR_STEP = tl.constexpr(1 << 20)  # > any grid's program count


@triton.jit
def _grid_sync(bar_ptr, n_prog):
    """Every program of the launch waits here until all have arrived. bar_ptr is an int64 counter that only
    grows: each launch starts at a multiple of BAR_STEP and its last arrival lifts it to the next multiple, so
    launches of different grid sizes (batch buckets) share one counter and nothing is ever reset. Needs every
    program resident (grid <= SM count, checked by the caller)."""
    tl.debug_barrier()  # the program's stores come before its arrival
    old = tl.atomic_add(bar_ptr, 1, sem="acq_rel")
    base = old // BAR_STEP * BAR_STEP
    if old - base == n_prog - 1:  # the last to arrive releases the launch
        tl.atomic_add(bar_ptr, -(n_prog - BAR_STEP), sem="acq_rel")  # tensor first: the interpreter needs it
    cur = old + 1
    while cur < base + BAR_STEP:
        cur = tl.atomic_add(bar_ptr, 0, sem="acquire")
    tl.debug_barrier()


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


_BARRIERS: dict = {}


def _barrier(device: torch.device) -> torch.Tensor:
    """The grid-barrier counter of a device (allocated on first use, which is outside any graph capture:
    the kernels compile on a warm-up call first)."""
    key = str(device)
    if key not in _BARRIERS:
        _BARRIERS[key] = torch.zeros(1, dtype=torch.int64, device=device)
    return _BARRIERS[key]


def _sm_count(device: torch.device) -> int:
    if _interp() or torch.device(device).type != "cuda":
        return 8
    return torch.cuda.get_device_properties(device).multi_processor_count


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


def _merge(part: torch.Tensor, lse: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    bsz, h, _, d = q.shape
    on = pdl.enabled(q.device)
    out = torch.empty(bsz, h, 1, d, dtype=q.dtype, device=q.device)
    _merge_kernel[(bsz * h,)](part, lse, out, D=d, NSPLIT=part.shape[1], PDL=on, **pdl.launch_kwargs(on))
    return out


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
