"""InfLLM v2 kernels vs their references: small shapes under TRITON_INTERPRET=1 on CPU, real shapes on GPU."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.infllm_v2 import (InfLLMParams, compress_keys, compress_keys_ref, idx_to_mask,  # noqa: E402
                                      select_blocks, select_blocks_ref, sparse_attention, sparse_attention_ref)

# prefill-shaped cases run many interpreted programs: minutes on CPU, so `slow` there (seconds on a GPU)
SLOW_ON_CPU = [pytest.mark.slow] if DEVICE == "cpu" else []

# a scaled-down sparse_config: 16-token blocks, windows of 8 with stride 4, 2 local blocks, top-6
TINY = InfLLMParams(kernel_size=8, kernel_stride=4, init_blocks=1, block_size=16, window_size=32, topk=6,
                    dense_len=64)


def _compressed(k, lengths, p):
    ck = torch.zeros(k.shape[0], k.shape[1], (k.shape[2] - p.kernel_size) // p.kernel_stride + 1, k.shape[3],
                     device=k.device, dtype=k.dtype)
    compress_keys(k, ck, torch.tensor(lengths, dtype=torch.int32, device=k.device), k.shape[2] // p.kernel_stride + 1,
                  p)
    return ck


def test_compress_matches_reference_and_is_incremental():
    torch.manual_seed(0)
    k = torch.randn(2, 2, 100, 16, device=DEVICE)
    ck = _compressed(k, [100, 37], TINY)
    for b, n in enumerate([100, 37]):
        ref = compress_keys_ref(k[b], n, TINY)
        assert torch.allclose(ck[b, :, :ref.shape[1]], ref, atol=1e-6)
        assert ck[b, :, ref.shape[1]:].abs().sum() == 0  # incomplete windows are not written
    # decode: one window per step, from the device length alone
    ck2 = torch.zeros_like(ck)
    for n in range(1, 101):
        compress_keys(k[:1], ck2[:1], torch.tensor([n], dtype=torch.int32, device=DEVICE), 1, TINY)
    assert torch.allclose(ck2[0], ck[0], atol=1e-6)


@pytest.mark.parametrize("topk_kernel", [True, False])
@pytest.mark.parametrize("t,n", [(1, 150), (1, 9), pytest.param(24, 150, marks=SLOW_ON_CPU)])
def test_selection_matches_reference(t, n, topk_kernel, monkeypatch):
    """topk_kernel: the radix top-k kernel; else int64 keys + torch.topk (the path for rows of many blocks)."""
    from engine.kernels.infllm import select as iv  # the switch lives beside the top-k kernel

    monkeypatch.setattr(iv, "PREFILL_TOPK_MAX_BLOCKS", 4096 if topk_kernel else 0)
    torch.manual_seed(t + n)
    h, kvh, d, cap = 4, 2, 16, 160
    k = torch.randn(1, kvh, cap, d, device=DEVICE)
    q = torch.randn(1, h, t, d, device=DEVICE)
    ck = _compressed(k, [n], TINY)
    nb = cap // TINY.block_size
    idx = select_blocks(q, ck, torch.tensor([n], dtype=torch.int32, device=DEVICE), nb, TINY)
    ref = select_blocks_ref(q, ck, [n], nb, TINY)
    assert torch.equal(idx_to_mask(idx, nb), ref)
    pos = torch.arange(n - t, n, device=DEVICE)
    assert ref[..., 0].all()  # the initial block is always kept
    assert ref.gather(-1, (pos // TINY.block_size).view(1, 1, t, 1).expand(1, kvh, t, 1)).all()  # own block


def test_ties_go_to_the_lower_block():
    """All keys equal -> every block scores the same; kernel and reference both keep the lowest indices."""
    h, kvh, d, cap, n = 4, 2, 16, 160, 160
    k = torch.ones(1, kvh, cap, d, device=DEVICE)
    q = torch.randn(1, h, 1, d, device=DEVICE)
    ck = _compressed(k, [n], TINY)
    nb = cap // TINY.block_size
    got = idx_to_mask(select_blocks(q, ck, torch.tensor([n], dtype=torch.int32, device=DEVICE), nb, TINY), nb)
    ref = select_blocks_ref(q, ck, [n], nb, TINY)
    assert torch.equal(got, ref)
    # forced: block 0 and the local blocks 7..9 (own block + 2) -> the 2 free slots go to blocks 1 and 2
    assert got[0, 0, 0].nonzero().flatten().tolist() == [0, 1, 2, 7, 8, 9]


@pytest.mark.parametrize("t,n,dtype", [(1, 150, torch.float32), pytest.param(17, 150, torch.float32, marks=SLOW_ON_CPU),
                                       (1, 150, torch.bfloat16)])
def test_sparse_attention_matches_reference(t, n, dtype):
    torch.manual_seed(1)
    h, kvh, d, cap = 4, 2, 16, 160
    q = torch.randn(1, h, t, d, device=DEVICE, dtype=dtype)
    k = torch.randn(1, kvh, cap, d, device=DEVICE, dtype=dtype)
    v = torch.randn(1, kvh, cap, d, device=DEVICE, dtype=dtype)
    ck = _compressed(k, [n], TINY)
    nb = cap // TINY.block_size
    lens = torch.tensor([n], dtype=torch.int32, device=DEVICE)
    idx = select_blocks(q, ck, lens, nb, TINY)
    got = sparse_attention(q, k, v, idx, lens, TINY.block_size)
    ref = sparse_attention_ref(q, k, v, idx_to_mask(idx, nb), [n], TINY.block_size)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (got.float() - ref.float()).abs().max().item() < tol


@pytest.mark.parametrize("_", [pytest.param(0, marks=SLOW_ON_CPU)])
def test_topk_covering_every_block_is_dense(_):
    torch.manual_seed(2)
    p = InfLLMParams(kernel_size=8, kernel_stride=4, init_blocks=1, block_size=16, window_size=32, topk=64)
    h, kvh, d, n = 4, 2, 16, 70 if DEVICE == "cpu" else 150
    dtype = torch.float32 if DEVICE == "cpu" else torch.bfloat16  # the interpreter's bf16 prefill dots overflow
    q = torch.randn(1, h, n, d, device=DEVICE, dtype=dtype)
    k = torch.randn(1, kvh, 160, d, device=DEVICE, dtype=dtype)
    v = torch.randn(1, kvh, 160, d, device=DEVICE, dtype=dtype)
    ck = _compressed(k, [n], p)
    lens = torch.tensor([n], dtype=torch.int32, device=DEVICE)
    got = sparse_attention(q, k, v, select_blocks(q, ck, lens, 10, p), lens, p.block_size)
    dense = F.scaled_dot_product_attention(q.float(), k[:, :, :n].float().repeat_interleave(2, 1),
                                           v[:, :, :n].float().repeat_interleave(2, 1), is_causal=True)
    assert (got.float() - dense).abs().max().item() < 2e-2


def test_batched_decode_rows_of_different_lengths():
    torch.manual_seed(3)
    h, kvh, d, cap = 4, 2, 16, 160
    lengths = [150, 70, 20]
    q = torch.randn(3, h, 1, d, device=DEVICE)
    k = torch.randn(3, kvh, cap, d, device=DEVICE)
    v = torch.randn(3, kvh, cap, d, device=DEVICE)
    ck = _compressed(k, lengths, TINY)
    lens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    idx = select_blocks(q, ck, lens, 10, TINY)
    assert torch.equal(idx_to_mask(idx, 10), select_blocks_ref(q, ck, lengths, 10, TINY))
    got = sparse_attention(q, k, v, idx, lens, TINY.block_size)
    ref = sparse_attention_ref(q, k, v, idx_to_mask(idx, 10), lengths, TINY.block_size)
    assert (got - ref).abs().max().item() < 1e-5
