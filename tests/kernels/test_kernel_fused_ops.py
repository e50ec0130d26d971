"""RMSNorm, rotary + KV write and SwiGLU kernels vs their references (interpreter on CPU; real shapes on GPU)."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine import ops  # noqa: E402
from engine.kernels.argmax import argmax, argmax_step  # noqa: E402
from engine.kernels.decode_inputs import decode_inputs, decode_inputs_ref  # noqa: E402
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_argmax_step_advances_inputs(dtype):
    """A decode step's end: the picks, the float32 logits (a copy for bf16, the input itself for fp32), tokens
    <- picks, positions + 1, and each pick in the history at its new position (none past the history's end);
    equal to ops.argmax_step's plain path."""
    b, v, hist_len = 3, 4099, 12
    x = torch.randn(b, v, device=DEVICE).to(dtype)
    x[1, [5, 3000]] = 20.0  # a tie across blocks
    pos0 = torch.tensor([4, 9, 11], device=DEVICE)  # the last row's new position 12 is past the history
    outs = []
    for fn in (argmax_step, ops.argmax_step):
        tokens, pos = torch.full((b, 1), -1, device=DEVICE), pos0.clone()
        hist = torch.full((b, hist_len), -1, device=DEVICE)
        nxt, f32 = fn(x, tokens, pos, hist)
        outs.append((nxt, f32, tokens, pos, hist))
    (nxt, f32, tokens, pos, hist), ref = outs
    want = x.float().argmax(-1)
    assert torch.equal(nxt, want) and int(nxt[1]) == 5 and torch.equal(f32, x.float()) and f32.dtype == torch.float32
    assert torch.equal(tokens[:, 0], want) and torch.equal(pos, pos0 + 1)
    assert hist[0, 5] == want[0] and hist[1, 10] == want[1] and (hist == -1).sum() == b * hist_len - 2
    assert all(torch.equal(a, r) for a, r in zip(outs[0], ref))
    if dtype == torch.float32:
        assert f32.data_ptr() == x.data_ptr()


@pytest.mark.parametrize("h,d,scale,dtype", [(40, 16, 1.0, torch.float32), (100, 32, 12.0, torch.bfloat16)])
def test_kernel_decode_inputs(h, d, scale, dtype):
    """The step's inputs from (token, position): equal to the torch ops bit for bit (embedding gather and one
    rounding of the scaled row, table rows, int32 slots and lengths), and to ops.decode_inputs' plain path."""
    v, s, b = 50, 20, 3
    embed, cos, sin = (torch.randn(n, k, device=DEVICE).to(dtype) for n, k in ((v, h), (s, d), (s, d)))
    tokens = torch.tensor([[7], [0], [49]], device=DEVICE)
    pos = torch.tensor([0, 19, 5], device=DEVICE)
    got = decode_inputs(tokens, pos, embed, cos, sin, scale)
    want = decode_inputs_ref(tokens, pos, embed, cos, sin, scale)
    bufs = tuple(torch.empty_like(t) for t in want)
    plain = ops.decode_inputs(tokens, pos, embed, cos, sin, scale, bufs)
    for a, r, p in zip(got, want, plain):
        assert a.dtype == r.dtype and torch.equal(p, r)
    # the interpreter rounds float32 -> bf16 toward zero (the GPU to nearest, as torch): the scaled bf16 row is
    # exact on the GPU, within one bf16 step on CPU
    exact = DEVICE == "cuda" or scale == 1.0
    assert torch.equal(got[0], want[0]) if exact else close(got[0], want[0], 1e-2)
    assert all(torch.equal(a, r) for a, r in zip(got[1:], want[1:]))
