"""Flash-decoding kernel vs its reference: small odd shapes under TRITON_INTERPRET=1, real shapes on GPU."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.decode_attention import decode_attention, decode_attention_ref  # noqa: E402


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _case(b, hq, hkv, d, cap, lengths, dtype, splits=None):
    q = torch.randn(b, hq, d, device=DEVICE, dtype=dtype)
    k = torch.randn(b, hkv, cap, d, device=DEVICE, dtype=dtype)
    v = torch.randn(b, hkv, cap, d, device=DEVICE, dtype=dtype)
    lens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    return rel_err(decode_attention(q, k, v, lens, num_splits=splits), decode_attention_ref(q, k, v, lens))


@pytest.mark.parametrize("b,hq,hkv,d,cap,lengths,splits", [
    (1, 4, 2, 16, 37, [37], None), (3, 6, 2, 32, 70, [1, 45, 70], 4), (2, 3, 3, 16, 130, [129, 7], 2),
    (2, 4, 2, 16, 300, [5, 290], None),  # default splits: each split's share computed from the length
])
def test_kernel_decode_attention_matches_reference(b, hq, hkv, d, cap, lengths, splits):
    assert _case(b, hq, hkv, d, cap, lengths, torch.float32, splits) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("b,hq,hkv,d,cap", [(1, 16, 2, 64, 4096), (1, 32, 2, 128, 8192), (8, 32, 2, 128, 2048)])
def test_kernel_decode_attention_gpu(b, hq, hkv, d, cap):
    lengths = torch.randint(1, cap + 1, (b,)).tolist()
    assert _case(b, hq, hkv, d, cap, lengths, torch.bfloat16) < 2e-2
