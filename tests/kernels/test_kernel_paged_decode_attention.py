"""Paged flash-decoding vs its reference: small odd shapes under TRITON_INTERPRET=1, real shapes on GPU. Block
tables are shuffled pool blocks, so a row's slots are scattered as a served sequence's are."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.paged_decode_attention import paged_decode_attention, paged_decode_attention_ref  # noqa: E402


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _inputs(b, hq, hkv, d, bs, lengths, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = max(-(-n // bs) for n in lengths) + 1  # one spare column: a table is wider than its row needs
    blocks = b * width + 3
    q = torch.randn(b, hq, d, generator=g).to(DEVICE, dtype)
    k = torch.randn(blocks, bs, hkv, d, generator=g).to(DEVICE, dtype)
    v = torch.randn(blocks, bs, hkv, d, generator=g).to(DEVICE, dtype)
    tables = torch.randperm(blocks, generator=g)[:b * width].view(b, width).to(DEVICE, torch.int32)
    lens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    return q, k, v, tables, lens


@pytest.mark.parametrize("b,hq,hkv,d,bs,lengths,splits", [
    (1, 4, 2, 16, 16, [37], None), (3, 6, 2, 32, 16, [1, 45, 70], 4), (2, 3, 3, 16, 32, [129, 7], 2),
    (2, 9, 3, 16, 64, [64, 65], None),  # block size 64 (the engine's), a length on and just past a block edge
])
def test_kernel_paged_decode_attention_matches_reference(b, hq, hkv, d, bs, lengths, splits):
    q, k, v, tables, lens = _inputs(b, hq, hkv, d, bs, lengths, torch.float32)
    got = paged_decode_attention(q, k, v, tables, lens, num_splits=splits)
    assert rel_err(got, paged_decode_attention_ref(q, k, v, tables, lens)) < 1e-4


def test_kernel_paged_decode_attention_padding_row_is_zero():
    """A length-0 row (a CUDA-graph bucket's padding) gives zeros, not NaN, and leaves the other rows alone."""
    q, k, v, tables, lens = _inputs(3, 4, 2, 16, 16, [20, 1, 1], torch.float32, seed=1)
    lens[1] = 0
    got = paged_decode_attention(q, k, v, tables, lens, num_splits=2)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
    keep = torch.tensor([0, 2])
    want = paged_decode_attention_ref(q[keep], k, v, tables[keep], lens[keep])
    assert rel_err(got[keep], want) < 1e-4


def test_kernel_paged_equals_contiguous_decode_attention():
    """The same K/V laid out in pool blocks and in a contiguous row give the same attention."""
    from engine.kernels.decode_attention import decode_attention_ref

    q, k, v, tables, lens = _inputs(2, 4, 2, 16, 16, [33, 50], torch.float32, seed=2)
    rows_k = torch.stack([k[tables[i].long()].reshape(-1, 2, 16).transpose(0, 1) for i in range(2)])
    rows_v = torch.stack([v[tables[i].long()].reshape(-1, 2, 16).transpose(0, 1) for i in range(2)])
    got = paged_decode_attention(q, k, v, tables, lens)
    assert rel_err(got, decode_attention_ref(q, rows_k, rows_v, lens)) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("b,hq,hkv,d,lmax", [(1, 9, 3, 64, 8192), (16, 9, 3, 64, 2048), (1, 32, 2, 128, 8192),
                                              (16, 32, 2, 128, 4096)])
def test_kernel_paged_decode_attention_gpu(b, hq, hkv, d, lmax):
    lengths = torch.randint(1, lmax + 1, (b,), generator=torch.Generator().manual_seed(b)).tolist()
    q, k, v, tables, lens = _inputs(b, hq, hkv, d, 64, lengths, torch.bfloat16)
    assert rel_err(paged_decode_attention(q, k, v, tables, lens), paged_decode_attention_ref(q, k, v, tables, lens)) \
        < 2e-2
