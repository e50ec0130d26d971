"""The decode top-k by threshold (_threshold_slots inside _select_attend_kernel) against a stable sort of the
same pooled block scores: exact block sets with many ties, forced blocks, short rows and the dense switch.
CPU: TRITON_INTERPRET=1; the same cases run on the GPU."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.infllm_v2 import InfLLMParams, _select_attend, decode_slots, idx_to_mask  # noqa: E402

P = InfLLMParams(kernel_size=8, kernel_stride=4, init_blocks=1, block_size=16, window_size=32, topk=6,
                 dense_len=64)
KVH, NB = 2, 40


def _want(pool, lengths, dense_len, p=P):
    """Stable descending sort of max(own[j], tail[j - 1]) with forced blocks at +inf: the reference's top-k."""
    own, tail = pool[:, 0].cpu(), pool[:, 1].cpu()
    score = torch.maximum(own, torch.cat([torch.zeros(own.shape[0], 1), tail[:, :-1]], 1)).clamp_min(0)
    out = torch.zeros(len(lengths), KVH, NB, dtype=torch.bool)
    for b, n in enumerate(lengths):
        qb = (n - 1) // p.block_size
        j = torch.arange(NB)
        dense = n < dense_len
        forced = (j < p.init_blocks) | ((j <= qb) & ((j + p.local_blocks >= qb) | dense))
        k = decode_slots(p, NB, dense_len) if dense else min(p.topk, NB)
        for h in range(KVH):
            s = torch.where(forced, float("inf"), score[b * KVH + h]).masked_fill(j > qb, float("-inf"))
            order = torch.sort(s, descending=True, stable=True).indices[:k]
            out[b, h, order] = True
            out[b, h] &= j <= qb
    return out


@pytest.mark.parametrize("levels", [3, 1000])
def test_threshold_selection_is_the_stable_top_k(levels):
    """levels 3: scores from {0, 0.5, 1}, so the k-th score is almost always tied (ties to the lower block)."""
    lengths = [640, 300, 100, 40, 17, 1]
    g = torch.Generator().manual_seed(levels)
    pool = (torch.randint(0, levels, (len(lengths) * KVH, 2, NB), generator=g).float() / max(levels - 1, 1))
    pool = pool.to(DEVICE)
    lens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    nq = torch.zeros(len(lengths), 4, 1, 16, device=DEVICE)
    kc = torch.zeros(len(lengths), KVH, NB * P.block_size, 16, device=DEVICE)
    idx = _select_attend(None, kc, None, pool, lens, P, 200, None, nq)[0]
    want = _want(pool, lengths, 200)
    assert torch.equal(idx_to_mask(idx, NB)[:, :, 0].cpu(), want)
    for b in range(len(lengths)):  # slots 0 .. n_sel - 1 in block order, -1 after
        n_sel = int(want[b, 0].sum())
        got = idx[b, :, 0].cpu()
        assert (got[:, n_sel:] == -1).all()
        assert (got[:, 1:n_sel] > got[:, :n_sel - 1]).all()
