"""RMSNorm, rotary + KV write and SwiGLU kernels vs their references (interpreter on CPU; real shapes on GPU)."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.argmax import argmax  # noqa: E402
from engine.kernels.rmsnorm import rms_norm, rms_norm_ref  # noqa: E402
from engine.kernels.rotary import rotary_kv, rotary_kv_ref  # noqa: E402
from engine.kernels.swiglu import swiglu, swiglu_ref  # noqa: E402


def close(a, b, tol):
    return ((a.float() - b.float()).norm() / b.float().norm()).item() < tol


@pytest.mark.parametrize("m,h,residual", [(3, 40, False), (5, 100, True)])
def test_kernel_rms_norm(m, h, residual):
    x = torch.randn(m, h, device=DEVICE)
    r = torch.randn(m, h, device=DEVICE) if residual else None
    w = torch.rand(h, device=DEVICE) + 0.5
    y, hh = rms_norm(x, w, 1e-5, r)
    y_ref, h_ref = rms_norm_ref(x, w, 1e-5, r)
    assert close(y, y_ref, 1e-5) and close(hh, h_ref, 1e-6)


def _rotary_inputs(t, hq, hkv, d, b, s):
    qkv = torch.randn(t, hq + 2 * hkv, d, device=DEVICE)  # one fused projection, viewed as q, k, v
    ang = torch.rand(t, d // 2, device=DEVICE) * 6
    caches = [torch.randn(b, hkv, s, d, device=DEVICE) for _ in range(2)]
    bidx = torch.randint(0, b, (t,), device=DEVICE, dtype=torch.int32)
    pos = torch.randperm(s, device=DEVICE)[:t].to(torch.int32)
    return qkv, ang.cos(), ang.sin(), caches, bidx, pos


@pytest.mark.parametrize("t,hq,hkv,d,b,s", [(3, 4, 2, 16, 2, 9), (5, 3, 1, 32, 1, 7)])
def test_kernel_rotary_kv(t, hq, hkv, d, b, s):
    qkv, cos, sin, caches, bidx, pos = _rotary_inputs(t, hq, hkv, d, b, s)
    outs = []
    for fn in (rotary_kv, rotary_kv_ref):
        x, kc, vc = qkv.clone(), caches[0].clone(), caches[1].clone()
        fn(x[:, :hq], x[:, hq:hq + hkv], x[:, hq + hkv:], cos, sin, kc, vc, bidx, pos)
        outs.append((x[:, :hq], kc, vc))
    for a, b_ in zip(*outs):
        assert close(a, b_, 1e-6)


def test_kernel_rotary_kv_reads_full_table_rows():
    """The engine passes rows of rope.py's [S, D] tables (both halves equal, model dtype) straight in."""
    qkv, cos, sin, caches, bidx, pos = _rotary_inputs(4, 4, 2, 16, 2, 9)
    full_cos, full_sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    outs = []
    for c, s_ in ((cos, sin), (full_cos, full_sin)):
        x, kc, vc = qkv.clone(), caches[0].clone(), caches[1].clone()
        rotary_kv(x[:, :4], x[:, 4:6], x[:, 6:], c, s_, kc, vc, bidx, pos)
        outs.append((x, kc, vc))
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_kernel_int4_linear_swiglu_and_residual():
    """engine Int4Weight entry point: [gate | up] rows -> SwiGLU epilogue (rows interleaved once, cached), and
    the residual epilogue, against the plain ops."""
    import torch.nn.functional as F

    from engine.kernels.int4_matmul import int4_linear
    from engine.quant import Int4Weight, int4_linear_ref, pack_int4

    g = torch.Generator().manual_seed(0)
    w = Int4Weight(pack_int4(torch.randint(0, 16, (64, 128), generator=g)), torch.rand(64, 4, generator=g) * 0.1,
                   -torch.rand(64, 4, generator=g) * 0.8, 32)
    w = w.to(DEVICE)
    x = torch.randn(1, 128, generator=g).to(DEVICE)
    ref = int4_linear_ref(x, w)
    gate, up = ref.chunk(2, -1)
    assert close(int4_linear(x, w, swiglu=True), F.silu(gate) * up, 1e-5)
    res = torch.randn(1, 64, generator=g).to(DEVICE)
    assert close(int4_linear(x, w, residual=res), ref + res, 1e-5)


@pytest.mark.parametrize("m,i", [(3, 50), (2, 1100)])
def test_kernel_swiglu(m, i):
    gu = torch.randn(m, 2 * i, device=DEVICE)
    assert close(swiglu(gu), swiglu_ref(gu), 1e-6)


@pytest.mark.gpu
def test_kernel_fused_ops_gpu_shapes():
    x, r = (torch.randn(8, 4096, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    w = torch.rand(4096, device="cuda", dtype=torch.bfloat16) + 0.5
    assert all(close(a, b, 1e-2) for a, b in zip(rms_norm(x, w, 1e-6, r), rms_norm_ref(x, w, 1e-6, r)))
    gu = torch.randn(8, 2 * 16384, device="cuda", dtype=torch.bfloat16)
    assert close(swiglu(gu), swiglu_ref(gu), 1e-2)
    test_kernel_rotary_kv(8, 32, 2, 128, 8, 4096)


@pytest.mark.parametrize("b,v", [(1, 5000), (3, 2049), (2, 73448)])
def test_kernel_argmax_equals_torch_first_index_on_ties(b, v):
    x = torch.randn(b, v, device=DEVICE)
    x[:, [7, v - 3, v // 2]] = 10.0  # ties across blocks: the lowest index wins, as torch.argmax
    x[-1, :] = torch.randn(v, device=DEVICE)
    assert torch.equal(argmax(x), x.argmax(-1))
