"""The decode path (rank selection with the on-device dense switch + one-launch attention) and the prefill path
(shared forced-block tiles + per-token chosen blocks) against the references. CPU: TRITON_INTERPRET=1."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.infllm_v2 import (InfLLMParams, compress_keys, decode_slots, forced_blocks,  # noqa: E402
                                      idx_to_mask, infllm_v2_attention, select_blocks, select_blocks_ref,
                                      sparse_attention_ref, sparse_decode_attention, sparse_prefill_attention)

TINY = InfLLMParams(kernel_size=8, kernel_stride=4, init_blocks=1, block_size=16, window_size=32, topk=6,
                    dense_len=64)
H, KVH, D, CAP = 4, 2, 16, 160
SLOW_ON_CPU = [pytest.mark.slow] if DEVICE == "cpu" else []  # more interpreted programs: seconds each on CPU
NB = CAP // TINY.block_size


def _inputs(b, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(b, KVH, CAP, D, generator=g).to(DEVICE, dtype)
    v = torch.randn(b, KVH, CAP, D, generator=g).to(DEVICE, dtype)
    ck = torch.zeros(b, KVH, TINY.num_windows(CAP), D, device=DEVICE, dtype=dtype)
    return k, v, ck


def _lens(lengths):
    return torch.tensor(lengths, dtype=torch.int32, device=DEVICE)


def test_decode_selection_is_ranked_and_the_dense_switch_reads_the_length():
    """Rows at or past dense_len select the top-k, best first from slot 0; shorter rows select every block, and
    attending to them is dense attention. One batch, rows on both sides of the switch."""
    lengths = [150, 100, 70, 20]
    k, v, ck = _inputs(4, 0)
    compress_keys(k, ck, _lens(lengths), CAP // TINY.kernel_stride + 1, TINY)
    q = torch.randn(4, H, 1, D, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    dense_len = 90
    idx = select_blocks(q, ck, _lens(lengths), NB, TINY, dense_len=dense_len)
    assert idx.shape[-1] == decode_slots(TINY, NB, dense_len) == 6  # cdiv(90, 16)
    ref = select_blocks_ref(q, ck, lengths, NB, TINY)
    every = torch.stack([torch.arange(NB, device=DEVICE) < -(-n // TINY.block_size) for n in lengths])
    for b, n in enumerate(lengths):
        want = ref[b] if n >= dense_len else every[b].expand(KVH, 1, NB)
        assert torch.equal(idx_to_mask(idx[b], NB), want), n
        n_sel = int(want[0, 0].sum())
        assert (idx[b, :, 0, :n_sel] >= 0).all() and (idx[b, :, 0, n_sel:] == -1).all()  # filled from slot 0
    got = sparse_decode_attention(q, k, v, idx, _lens(lengths), TINY, dense_len)
    want = sparse_attention_ref(q, k, v, torch.where(torch.tensor([n >= dense_len for n in lengths], device=DEVICE)
                                                     .view(4, 1, 1, 1), ref, every[:, None, None]), lengths,
                                TINY.block_size)
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("per_split", [1, 4, pytest.param(2, marks=SLOW_ON_CPU), pytest.param(8, marks=SLOW_ON_CPU)])
def test_decode_attention_splits_and_merges(per_split):
    """Any blocks per split (splits past the selection write an empty partial); calls repeat exactly."""
    lengths = [150, 37]
    k, v, ck = _inputs(2, 2)
    compress_keys(k, ck, _lens(lengths), CAP // TINY.kernel_stride + 1, TINY)
    q = torch.randn(2, H, 1, D, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    idx = select_blocks(q, ck, _lens(lengths), NB, TINY)
    want = sparse_attention_ref(q, k, v, idx_to_mask(idx, NB), lengths, TINY.block_size)
    first = sparse_decode_attention(q, k, v, idx, _lens(lengths), TINY, blocks_per_split=per_split)
    again = sparse_decode_attention(q, k, v, idx, _lens(lengths), TINY, blocks_per_split=per_split)
    assert (first - want).abs().max().item() < 1e-5
    assert torch.equal(first, again)


@pytest.mark.parametrize("t,n", [(8, 150), pytest.param(24, 131, marks=SLOW_ON_CPU),
                                 pytest.param(40, 40, marks=SLOW_ON_CPU)])
def test_chosen_blocks_plus_forced_blocks_are_the_selection(t, n):
    k, _, ck = _inputs(1, t + n)
    compress_keys(k, ck, _lens([n]), CAP // TINY.kernel_stride + 1, TINY)
    q = torch.randn(1, H, t, D, generator=torch.Generator().manual_seed(n)).to(DEVICE)
    chosen = select_blocks(q, ck, _lens([n]), NB, TINY, chosen_only=True)
    assert chosen.shape[-1] == TINY.topk - forced_blocks(TINY)
    qb = (torch.arange(n - t, n, device=DEVICE) // TINY.block_size)[:, None]
    blk = torch.arange(NB, device=DEVICE)[None, :]
    forced = (blk <= qb) & ((blk < TINY.init_blocks) | (blk + TINY.local_blocks >= qb))
    got = idx_to_mask(chosen, NB)
    assert not (got & forced).any()
    assert torch.equal(got | forced, select_blocks_ref(q, ck, [n], NB, TINY))


@pytest.mark.parametrize("t,n,tile_rows", [(37, 150, 64), pytest.param(24, 150, 16, marks=SLOW_ON_CPU),
                                           pytest.param(50, 50, 128, marks=SLOW_ON_CPU)])
def test_prefill_attention_matches_reference(t, n, tile_rows):
    """Tiles that straddle query blocks (tile_rows 64 = 32 tokens) and a chunk that is the whole prompt."""
    k, v, ck = _inputs(1, t)
    compress_keys(k, ck, _lens([n]), CAP // TINY.kernel_stride + 1, TINY)
    q = torch.randn(1, H, t, D, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    got = sparse_prefill_attention(q, k, v, ck, _lens([n]), TINY, tile_rows=tile_rows)
    want = sparse_attention_ref(q, k, v, select_blocks_ref(q, ck, [n], NB, TINY), [n], TINY.block_size)
    assert (got - want).abs().max().item() < 1e-5


def test_prefill_without_room_for_the_forced_blocks_takes_the_general_path():
    """topk below the forced count: not every forced block is kept, so the per-token path runs."""
    p = InfLLMParams(kernel_size=8, kernel_stride=4, init_blocks=1, block_size=16, window_size=64, topk=4)
    assert forced_blocks(p) > p.topk
    k, v, ck = _inputs(1, 9)
    n, t = 150, 6
    compress_keys(k, ck, _lens([n]), CAP // p.kernel_stride + 1, p)
    q = torch.randn(1, H, t, D, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    got = infllm_v2_attention(q, k, v, ck, _lens([n]), p)
    want = sparse_attention_ref(q, k, v, select_blocks_ref(q, ck, [n], NB, p), [n], p.block_size)
    assert (got - want).abs().max().item() < 1e-5
