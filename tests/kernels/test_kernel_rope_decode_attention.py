"""The fused decode-step attention (rotary + cache write + attention) against its PyTorch reference: both
regimes (one program a sequence; splits + merge), GQA groups that are not powers of two, strided q/k/v views
of one qkv projection, rows at different positions, a max_len bound below the real length (picks the regime,
never the result), and repeated calls."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine import ops  # noqa: E402
from engine.kernels.rope_decode_attention import rope_decode_attention, rope_decode_attention_ref  # noqa: E402


def _case(b, hq, hkv, d, cap, positions, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, (hq + 2 * hkv) * d, generator=g).to(device, dtype)
    q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
    q, k, v = q.view(b, hq, d), k.view(b, hkv, d), v.view(b, hkv, d)
    ang = torch.rand(b, d // 2, generator=g) * 6.28
    cos, sin = torch.cat([ang.cos()] * 2, -1).to(device, dtype), torch.cat([ang.sin()] * 2, -1).to(device, dtype)
    kc = torch.randn(b + 1, hkv, cap, d, generator=g).to(device, dtype)
    vc = torch.randn(b + 1, hkv, cap, d, generator=g).to(device, dtype)
    rows = torch.arange(1, b + 1, dtype=torch.int32, device=device)  # not starting at cache row 0
    pos = torch.tensor(positions, dtype=torch.int32, device=device)
    return q, k, v, cos, sin, kc, vc, rows, pos


def _check(args, atol, **kw):
    q, k, v, cos, sin, kc, vc, rows, pos = args
    q0 = q.clone()
    kc2, vc2 = kc.clone(), vc.clone()
    want = rope_decode_attention_ref(q, k, v, cos, sin, kc2, vc2, rows, pos)
    got = rope_decode_attention(q, k, v, cos, sin, kc, vc, rows, pos, **kw)
    assert torch.equal(q, q0)
    torch.testing.assert_close(kc, kc2, atol=atol, rtol=0)
    torch.testing.assert_close(vc, vc2, atol=0, rtol=0)
    torch.testing.assert_close(got, want, atol=atol, rtol=atol)


@pytest.mark.parametrize("hq,hkv", [(3, 1), (6, 2), (8, 8)])
def test_short_single_program(hq, hkv):
    _check(_case(2, hq, hkv, 32, 40, [0, 37], torch.float32, DEVICE), 1e-4, block=16)
    _check(_case(2, hq, hkv, 32, 600, [0, 537], torch.float32, DEVICE), 1e-4, max_len=8)


@pytest.mark.parametrize("splits", [2, 4])  # row 1 (5 old positions) leaves splits empty
def test_splits_merged(splits):
    args = _case(2, 6, 2, 32, 80, [70, 5], torch.float32, DEVICE, seed=1)
    for _ in range(2):
        _check(args, 1e-4, num_splits=splits, block=16)


def test_ops_plain_path_equals_reference(monkeypatch):
    """ops.decode_attention_step without kernels (rotary_to_cache + attention) computes the same thing."""
    monkeypatch.setattr(ops, "KERNELS", False)
    q, k, v, cos, sin, kc, vc, rows, pos = _case(2, 6, 2, 32, 40, [11, 30], torch.float32, "cpu", seed=2)
    kc2, vc2 = kc.clone(), vc.clone()
    want = rope_decode_attention_ref(q, k, v, cos, sin, kc2, vc2, rows, pos)
    got = ops.decode_attention_step(q, k, v, cos, sin, kc, vc, rows, pos, 32 ** -0.5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)


@pytest.mark.gpu
@pytest.mark.parametrize("d,hq,hkv,cap,positions", [(64, 9, 3, 8192, [700]), (64, 16, 2, 8192, [300, 5000]),
                                                     (128, 32, 8, 4096, [4000, 1, 1023, 1024])])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_real_shapes(d, hq, hkv, cap, positions, dtype):
    args = _case(len(positions), hq, hkv, d, cap, positions, dtype, "cuda")
    for _ in range(3):
        _check(args, 2e-2 if dtype == torch.bfloat16 else 1e-4)
