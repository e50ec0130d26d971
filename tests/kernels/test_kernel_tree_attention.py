"""Tree attention kernel vs its reference: small odd shapes under TRITON_INTERPRET=1, real shapes on GPU."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.tree_attention import tree_attention, tree_attention_ref  # noqa: E402
from engine.speculative.verify import ancestry  # noqa: E402


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _tree_mask(parents: list[int], committed: int, cap: int, pad: int = 0) -> torch.Tensor:
    """bool [1, 1, T, cap]: the prefix, tree ancestry, and `pad` padding rows that see the prefix and themselves
    (the shape the verification graph builds)."""
    n1 = len(parents) + 1
    T = n1 + pad
    m = torch.zeros(T, cap, dtype=torch.bool)
    m[:, :committed] = True
    m[:n1, committed:committed + n1] = ancestry(torch.tensor(parents, dtype=torch.long))
    m[n1:, committed + n1:committed + T] = torch.eye(pad, dtype=torch.bool)
    return m[None, None].to(DEVICE)


def _case(hq, hkv, d, cap, committed, parents, dtype, pad=0, splits=None, strided_q=True):
    T = len(parents) + 1 + pad
    if strided_q:  # as the model passes it: [1, T, Hq, D] transposed to [1, Hq, T, D]
        q = torch.randn(1, T, hq, d, device=DEVICE, dtype=dtype).transpose(1, 2)
    else:
        q = torch.randn(1, hq, T, d, device=DEVICE, dtype=dtype)
    k = torch.randn(1, hkv, cap, d, device=DEVICE, dtype=dtype)
    v = torch.randn(1, hkv, cap, d, device=DEVICE, dtype=dtype)
    mask = _tree_mask(parents, committed, cap, pad)
    lengths = torch.tensor([committed + T], dtype=torch.int32, device=DEVICE)
    out = tree_attention(q, k, v, mask, lengths, d ** -0.5, num_splits=splits)
    assert out.shape == (1, hq, T, d)
    return rel_err(out, tree_attention_ref(q, k, v, mask, lengths, d ** -0.5))


@pytest.mark.parametrize("hq,hkv,d,cap,committed,parents,pad,splits", [
    (3, 1, 16, 40, 9, [-1, 0, 1], 0, None),  # a chain of 3
    (6, 2, 32, 100, 50, [-1, -1, 0, 0, 2, 3, 1], 1, 2),  # a tree, a padding row, 2 splits
    (4, 4, 16, 300, 200, [-1, 0, 1, 2, 3, 4, 5], 0, None),  # no GQA, default splits over a longer prefix
    (9, 3, 16, 64, 0, [-1, 0], 1, 4),  # nothing committed: splits past the length exit at once
    (8, 1, 16, 80, 30, [-1, 0, 1, 2, 3, 4, 5, 6, 7], 0, 2),  # 80 query rows: two blocks of rows
])
def test_kernel_tree_attention_matches_reference(hq, hkv, d, cap, committed, parents, pad, splits):
    assert _case(hq, hkv, d, cap, committed, parents, torch.float32, pad, splits) < 1e-4


def test_kernel_tree_attention_reads_only_up_to_length():
    """Keys past `lengths` are never read, even where the mask says attend (NaN there must not leak)."""
    hq, hkv, d, cap, committed = 2, 1, 16, 64, 20
    q = torch.randn(1, hq, 3, d, device=DEVICE)
    k, v = torch.randn(1, hkv, cap, d, device=DEVICE), torch.randn(1, hkv, cap, d, device=DEVICE)
    k[:, :, committed + 3:] = float("nan")
    v[:, :, committed + 3:] = float("nan")
    mask = torch.ones(1, 1, 3, cap, dtype=torch.bool, device=DEVICE)
    lengths = torch.tensor([committed + 3], dtype=torch.int32, device=DEVICE)
    out = tree_attention(q, k, v, mask, lengths, d ** -0.5)
    ref = tree_attention_ref(q, k[:, :, :committed + 3], v[:, :, :committed + 3], mask[..., :committed + 3],
                             lengths, d ** -0.5)
    assert not out.isnan().any() and rel_err(out, ref) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("hq,hkv,d,cap,committed,n", [(9, 3, 64, 2048, 700, 7), (9, 3, 64, 2048, 1500, 15),
                                                      (32, 2, 128, 8192, 5000, 31)])
def test_kernel_tree_attention_gpu(hq, hkv, d, cap, committed, n):
    parents = [-1] + [i // 2 for i in range(n - 1)]
    assert _case(hq, hkv, d, cap, committed, parents, torch.bfloat16, pad=1) < 2e-2
