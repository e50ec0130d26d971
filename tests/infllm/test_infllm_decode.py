"""The decode step (stage 1 with the newest compressed key, top-k by rank, attention, merge) against the
references: the same blocks (exactly), the same output, on both sides of the on-device dense switch.
CPU: TRITON_INTERPRET=1 (stage 1 as its two phases); GPU: also the one-launch stage 1 with its grid barrier."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from engine.kernels.infllm_v2 import (BAR_STEP, InfLLMParams, _grid_sync, compress_keys,  # noqa: E402
                                      compress_keys_ref,
                                      decode_slots, idx_to_mask, select_blocks_ref, select_decode,
                                      sparse_attention_ref, sparse_decode, sparse_decode_attention)

TINY = InfLLMParams(kernel_size=8, kernel_stride=4, init_blocks=1, block_size=16, window_size=32, topk=6,
                    dense_len=64)
H, KVH, D, CAP = 4, 2, 16, 160
NB = CAP // TINY.block_size
FUSED = [False, True] if DEVICE == "cuda" else [False]


def _case(lengths, seed, dtype=torch.float32):
    """Caches holding every complete window but each row's newest one (the step must write it)."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    k, v = (torch.randn(b, KVH, CAP, D, generator=g).to(DEVICE, dtype) for _ in range(2))
    q = torch.randn(b, H, 1, D, generator=g).to(DEVICE, dtype)
    ck = torch.zeros(b, KVH, TINY.num_windows(CAP), D, device=DEVICE, dtype=dtype)
    compress_keys(k, ck, torch.tensor([n - 1 for n in lengths], dtype=torch.int32, device=DEVICE),
                  CAP // TINY.kernel_stride + 1, TINY)
    return q, k, v, ck, torch.tensor(lengths, dtype=torch.int32, device=DEVICE)


def _want(q, k, v, ck, lengths, dense_len, p=TINY):
    """The reference selection (every block of a row shorter than dense_len) and its attention."""
    ref = select_blocks_ref(q, ck, lengths, NB, p)[:, :, 0]  # [B, KVH, NB]
    for b, n in enumerate(lengths):
        if n < dense_len:
            ref[b] = (torch.arange(NB, device=DEVICE) <= (n - 1) // p.block_size).expand(KVH, NB)
    return ref, sparse_attention_ref(q, k, v, ref[:, :, None], lengths, p.block_size)


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("num_splits,per_split", [(2, 1), (1, 4), (4, 2)])
def test_decode_step_selects_the_reference_blocks(num_splits, per_split, fused):
    lengths = [150, 100, 70, 20, 9]
    dense_len = 90
    q, k, v, ck, lens = _case(lengths, num_splits * 10 + per_split)
    idx = select_decode(q, k, ck, lens, TINY, dense_len=dense_len, num_splits=num_splits, fused=fused)
    assert idx.shape[-1] == decode_slots(TINY, NB, dense_len) == 6  # cdiv(90, 16)
    for b, n in enumerate(lengths):  # the step wrote the newest window
        nc = TINY.num_windows(n)
        assert torch.allclose(ck[b, :, :nc], compress_keys_ref(k[b], n, TINY), atol=1e-6)
    ref, want = _want(q, k, v, ck, lengths, dense_len)
    assert torch.equal(idx_to_mask(idx, NB)[:, :, 0], ref)
    for b in range(len(lengths)):  # filled from slot 0, -1 after
        n_sel = int(ref[b, 0].sum())
        assert (idx[b, :, 0, :n_sel] >= 0).all() and (idx[b, :, 0, n_sel:] == -1).all()
    got = sparse_decode_attention(q, k, v, idx, lens, TINY, dense_len, blocks_per_split=per_split)
    assert (got - want).abs().max().item() < 1e-5
    again = sparse_decode(q, k, v, ck, lens, TINY, dense_len=dense_len)
    assert (again - want).abs().max().item() < 1e-5  # the whole step; repeat calls carry nothing over


@pytest.mark.parametrize("fused", FUSED)
def test_split_decode_step_matches_reference(fused):
    """method="split": forced blocks by position, the chosen ones ranked and attended in the same launch."""
    from engine.kernels.infllm_v2 import _split_attend, _stage1

    lengths = [150, 100, 70, 20, 9]
    q, k, v, ck, lens = _case(lengths, 31)
    pool = _stage1(q, k, ck, lens, TINY, None, 2, fused, None)
    idx, _, _ = _split_attend(q, k, v, pool, lens, TINY, 90, None)
    ref, want = _want(q, k, v, ck, lengths, 90)
    assert torch.equal(idx_to_mask(idx, NB)[:, :, 0], ref)
    for b in range(len(lengths)):  # filled from slot 0, -1 after
        n_sel = int(ref[b, 0].sum())
        assert (idx[b, :, 0, :n_sel] >= 0).all() and (idx[b, :, 0, n_sel:] == -1).all()
    got = sparse_decode(q, k, v, ck, lens, TINY, dense_len=90, method="split")
    assert (got - want).abs().max().item() < 1e-5


def test_ties_go_to_the_lower_block():
    """Equal keys everywhere: every block scores the same, so the lowest free blocks are taken."""
    q, _, _, _, lens = _case([160], 5)
    k = torch.ones(1, KVH, CAP, D, device=DEVICE)
    ck = torch.zeros(1, KVH, TINY.num_windows(CAP), D, device=DEVICE)
    compress_keys(k, ck, lens, CAP // TINY.kernel_stride + 1, TINY)
    idx = select_decode(q, k, ck, lens, TINY)
    assert idx_to_mask(idx, NB)[0, 0, 0].nonzero().flatten().tolist() == [0, 1, 2, 7, 8, 9]
    from engine.kernels.infllm_v2 import _split_attend, _stage1

    v = torch.randn_like(k)
    idx = _split_attend(q, k, v, _stage1(q, k, ck, lens, TINY, None, None, None, None), lens, TINY, 0, None)[0]
    assert idx_to_mask(idx, NB)[0, 0, 0].nonzero().flatten().tolist() == [0, 1, 2, 7, 8, 9]


def test_bf16_matches_reference():
    lengths = [150, 33]
    q, k, v, ck, lens = _case(lengths, 11, torch.bfloat16)
    got = sparse_decode(q, k, v, ck, lens, TINY)
    _, want = _want(q, k, v, ck, lengths, 0)
    assert (got.float() - want.float()).abs().max().item() < 2e-2


@pytest.mark.gpu
@pytest.mark.parametrize("n", [131072, 40000, 9000, 5000])
def test_8b_shape_selects_the_reference_blocks(n):
    """The 8B head shape and the published sparse_config at long contexts (a cache of 128K tokens)."""
    p = InfLLMParams()
    h, kvh, d, cap = 32, 2, 128, 131072
    g = torch.Generator(device="cuda").manual_seed(n)
    k, v = (torch.randn(1, kvh, cap, d, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    q = torch.randn(1, h, 1, d, generator=g, device="cuda", dtype=torch.bfloat16)
    ck = torch.zeros(1, kvh, p.num_windows(cap), d, device="cuda", dtype=torch.bfloat16)
    lens = torch.tensor([n], dtype=torch.int32, device="cuda")
    compress_keys(k, ck, lens - 1, cap // p.kernel_stride + 1, p)
    nb = cap // p.block_size
    idx = select_decode(q, k, ck, lens, p, dense_len=p.dense_len)
    got = sparse_decode_attention(q, k, v, idx, lens, p, p.dense_len)
    ref = select_blocks_ref(q, ck, [n], nb, p)[:, :, 0]
    if n < p.dense_len:
        ref[:] = torch.arange(nb, device="cuda") <= (n - 1) // p.block_size
    assert torch.equal(idx_to_mask(idx, nb)[:, :, 0], ref)
    want = sparse_attention_ref(q, k, v, ref[:, :, None], [n], p.block_size)
    assert (got.float() - want.float()).abs().max().item() < 2e-2
    from engine.kernels.infllm_v2 import _split_attend, _stage1

    ck2 = ck.clone()  # method "split" on the same state (the step rewrites its window: same values)
    idx2 = _split_attend(q, k, v, _stage1(q, k, ck2, lens, p, None, None, None, None), lens, p, p.dense_len, None)[0]
    assert torch.equal(idx_to_mask(idx2, nb)[:, :, 0], ref)
    got2 = sparse_decode(q, k, v, ck2, lens, p, dense_len=p.dense_len, method="split")
    assert (got2.float() - want.float()).abs().max().item() < 2e-2


@pytest.mark.gpu
def test_grid_barrier_shared_by_launches_of_different_sizes():
    """One counter serves every batch bucket: launches of 2, 10, 6, 16 and 2 programs in turn (a counter that assumed
    one grid size would hang or release early here), each still selecting the reference blocks."""
    barrier = torch.zeros(1, dtype=torch.int64, device="cuda")
    for lengths, splits in [([150], 1), ([150, 100, 70, 20, 9], 1), ([120, 60, 33], 1), ([150, 9], 4),
                            ([150], 1)]:
        q, k, v, ck, lens = _case(lengths, len(lengths) * 7 + splits)
        idx = select_decode(q, k, ck, lens, TINY, dense_len=90, num_splits=splits, fused=True, barrier=barrier)
        ref, _ = _want(q, k, v, ck, lengths, 90)
        assert torch.equal(idx_to_mask(idx, NB)[:, :, 0], ref)
    torch.cuda.synchronize()
    assert int(barrier) % (1 << 20) == 0  # every launch left it at a step boundary


@triton.jit
def _sync_kernel(bar_ptr, n_prog):
    _grid_sync(bar_ptr, n_prog)


def test_grid_barrier_counter_arithmetic():
    """One-program launches (the interpreter runs programs one at a time, so only n_prog = 1 can be run on
    CPU): each launch releases itself and leaves the counter at the next step boundary."""
    bar = torch.zeros(1, dtype=torch.int64, device=DEVICE)
    for i in range(1, 4):
        _sync_kernel[(1,)](bar, 1)
        assert int(bar) == i * BAR_STEP.value
