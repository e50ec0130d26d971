"""The prefill path (shared forced-block tiles + per-token chosen blocks) against the references (the decode
step: test_infllm_decode.py). CPU: TRITON_INTERPRET=1."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.infllm_v2 import (InfLLMParams, compress_keys, forced_blocks, idx_to_mask,  # noqa: E402
                                      infllm_v2_attention, select_blocks, select_blocks_ref, sparse_attention_ref,
                                      sparse_prefill_attention)

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
