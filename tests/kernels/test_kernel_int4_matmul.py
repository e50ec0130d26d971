"""int4 matmul kernels vs their reference, on small odd shapes (TRITON_INTERPRET=1 on CPU) and at 8B shapes on GPU."""
from __future__ import annotations

import os

import pytest
import torch

from engine.quant import Int4Weight, pack_int4

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before the kernels' module is imported

from engine.kernels import int4_matmul as K  # noqa: E402


def random_int4(n: int, k: int, group: int, act_order: bool = False, device: str = DEVICE,
                symmetric: bool = False) -> Int4Weight:
    """A random int4 weight (codes 0..15, positive scales; mins -8 * scale if symmetric, else around it)."""
    codes = torch.randint(0, 16, (n, k), device=device)
    scales = torch.rand(n, k // group, device=device) * 0.02 + 0.005
    mins = -8 * scales + (0 if symmetric else torch.randn_like(scales) * 0.01)
    perm = torch.randperm(k, device=device) if act_order else None
    return Int4Weight(pack_int4(codes), scales.bfloat16(), mins.bfloat16(), group, perm)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("m,n,k,group,act_order,symmetric", [
    (1, 24, 96, 32, False, False), (3, 40, 192, 64, True, False), (2, 8, 384, 128, False, True),
    (8, 56, 160, 32, True, True), (16, 72, 256, 64, False, False), (37, 36, 384, 128, True, False),
    (16, 20, 640, 128, False, False),
])
def test_kernel_int4_matmul_matches_reference(m, n, k, group, act_order, symmetric):
    pw = K.repack_int4(random_int4(n, k, group, act_order, symmetric=symmetric))
    x = torch.randn(m, k, device=DEVICE, dtype=torch.bfloat16)
    assert rel_err(K.int4_matmul(x, pw), K.int4_matmul_ref(x, pw)) < 1e-2
    xf = x.float()  # fp32 x: exact fp32 products on every path
    assert rel_err(K.int4_matmul(xf, pw), K.int4_matmul_ref(xf, pw)) < 1e-4


@pytest.mark.parametrize("m,n,group,split", [(1, 40, 128, 1), (3, 40, 128, 3), (16, 40, 64, 4), (17, 40, 32, 2),
                                             (8, 40, 128, 8), (5, 64, 128, 2), (2, 32, 64, 1)])
def test_kernel_int4_mma_every_split(m, n, group, split):
    """The tensor-core kernel outside the autotuner: K split over 1..8 programs, the last one sums and stores;
    the counts are back at zero afterwards (the next call, a graph replay, starts clean). N = 32, 64 with BN = 16
    take the unmasked (EVEN) loads."""
    pw = K.repack_int4(random_int4(n, 768, group))
    x = torch.randn(m, 768, device=DEVICE)
    res = torch.randn(m, n // 2, device=DEVICE)
    out = torch.full((m, n // 2), float("nan"), device=DEVICE)
    K._mma(x, pw, out, res, True, None, f32_dot=True, BN=16, SPLIT=split, STAGES=1, num_warps=4)
    assert rel_err(out, K.int4_matmul_ref(x, pw, res, swiglu=True)) < 1e-4
    assert int(K._counters(x.device).abs().sum()) == 0


@pytest.mark.parametrize("m", [1, 5, 11])
def test_kernel_int4_matmul_epilogues(m):
    pw = K.repack_int4(random_int4(48, 128, 32))
    x = torch.randn(m, 128, device=DEVICE, dtype=torch.bfloat16)
    res = torch.randn(m, 24, device=DEVICE, dtype=torch.bfloat16)
    assert rel_err(K.int4_matmul(x, pw, swiglu=True), K.int4_matmul_ref(x, pw, swiglu=True)) < 1e-2
    res48 = torch.randn(m, 48, device=DEVICE, dtype=torch.bfloat16)
    assert rel_err(K.int4_matmul(x, pw, residual=res48), K.int4_matmul_ref(x, pw, residual=res48)) < 1e-2
    assert res.shape == (m, 24)


@pytest.mark.parametrize("m,swiglu", [(1, False), (1, True), (5, True)])
def test_kernel_int4_gemv_norm_prologue(m, swiglu):
    """norm=(w, eps): RMSNorm of x fused into the kernel equals the fp32 norm followed by the matmul."""
    pw = K.repack_int4(random_int4(48, 320, 32, act_order=False))
    x = torch.randn(m, 320, device=DEVICE) * 3
    nw = torch.rand(320, device=DEVICE) + 0.5
    xn = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * nw
    got = K.int4_matmul(x, pw, swiglu=swiglu, norm=(nw, 1e-5))
    assert rel_err(got, K.int4_matmul_ref(xn, pw, swiglu=swiglu)) < 1e-4


@pytest.mark.parametrize("bn,bk,wide,prefetch", [(4, 64, True, False), (8, 128, False, True), (4, 128, True, False),
                                                  (4, 64, False, True)])
def test_kernel_int4_gemv_every_x_form(bn, bk, wide, prefetch):
    """The GEMV's configs outside the autotuner (it keeps one under the interpreter), with the norm prologue."""
    pw = K.repack_int4(random_int4(40, 320, 64, act_order=False))
    x = torch.randn(1, 320, device=DEVICE)
    nw = torch.rand(320, device=DEVICE) + 0.5
    xn = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * nw
    out = torch.full((1, 40), float("nan"), device=DEVICE)
    K._gemv(x, pw, out, None, False, (nw, 1e-5), BN=bn, BK=bk, X_WIDE=wide, PREFETCH=prefetch, num_warps=4)
    assert rel_err(out, K.int4_matmul_ref(xn, pw)) < 1e-4


@pytest.mark.parametrize("n,k,group,bn,bk,split,dtype", [
    (40, 320, 64, 8, 128, 1, torch.float32), (48, 384, 128, 16, 128, 2, torch.bfloat16),
    (48, 384, 32, 8, 64, 3, torch.bfloat16), (64, 512, 128, 16, 128, 2, torch.float32),  # EVEN: no masks
    (36, 1024, 128, 4, 256, 4, torch.bfloat16),  # more splits than tiles: a split with nothing to add
])
def test_kernel_int4_gemv2_every_split(n, k, group, bn, bk, split, dtype):
    """The split-K M = 1 GEMV outside the autotuner, with each prologue / epilogue: bf16 x takes the two-nibbles-a-
    shift unpacking (PAIRS), fp32 x the exact one; the last split sums the partials and the counts return to zero."""
    pw = K.repack_int4(random_int4(n, k, group))
    x = (torch.randn(1, k, device=DEVICE) * 2).to(dtype)
    nw = torch.rand(k, device=DEVICE) + 0.5
    xf = x.float()
    xn = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * nw
    res = torch.randn(1, n // 2, device=DEVICE).to(dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    for swiglu, residual, norm in ((True, res, None), (False, None, (nw, 1e-5)), (True, None, (nw, 1e-5))):
        out = torch.full((1, n // 2 if swiglu else n), float("nan"), device=DEVICE, dtype=dtype)
        K._gemv2(x, pw, out, residual, swiglu, norm, BN=bn, BK=bk, SPLIT=split, num_warps=1)
        ref = K.int4_matmul_ref(xf if norm is None else xn, pw, None if residual is None else residual.float(), swiglu)
        assert rel_err(out, ref) < tol
        assert int(K._counters(x.device).abs().sum()) == 0


@pytest.mark.parametrize("m,bn,bk,group", [(2, 4, 64, 32), (3, 8, 128, 64), (4, 4, 256, 128), (7, 16, 64, 32),
                                           (8, 8, 128, 64)])
def test_kernel_int4_gemv_rows(m, bn, bk, group):
    """The FMA GEMV over M rows (small layers of speculative verification), outside the autotuner: every row
    equals the reference, with the residual + swiglu epilogues and with the norm prologue."""
    pw = K.repack_int4(random_int4(40, 384, group))
    x = torch.randn(m, 384, device=DEVICE) * 2
    res = torch.randn(m, 20, device=DEVICE)
    out = torch.full((m, 20), float("nan"), device=DEVICE)
    K._gemv(x, pw, out, res, True, None, BN=bn, BK=bk, num_warps=4)
    assert rel_err(out, K.int4_matmul_ref(x, pw, res, swiglu=True)) < 1e-4
    nw = torch.rand(384, device=DEVICE) + 0.5
    xn = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * nw
    out = torch.full((m, 40), float("nan"), device=DEVICE)
    K._gemv(x, pw, out, None, False, (nw, 1e-5), BN=bn, BK=bk, num_warps=4)
    assert rel_err(out, K.int4_matmul_ref(xn, pw)) < 1e-4


def test_kernel_int4_dispatch():
    """M = 1 and a few rows on a small layer take the GEMV; many rows or a large layer the tensor-core kernel."""
    assert K.use_gemv(1, 32768, 4096) and K.use_gemv(8, 960, 576) and K.use_gemv(K.GEMV_MAX_M, 576, 1536)
    assert not K.use_gemv(K.GEMV_MAX_M + 1, 960, 576) and not K.use_gemv(2, 4608, 4096)
    assert not K.use_gemv(4, 3072, 576)  # smollm2's gate_up: 6.5 us on the GEMV, 5.6 on tensor cores (H200)


def test_kernel_int4_dequant_and_layout():
    w = random_int4(24, 160, 32)
    pw = K.repack_int4(w)
    from engine.quant import dequantize, int4_linear_ref
    assert rel_err(K.int4_dequant(pw, torch.float32), dequantize(w)) < 1e-6
    x = torch.randn(3, 160, device=DEVICE)
    assert rel_err(K.int4_matmul_ref(x, pw), int4_linear_ref(x, w)) < 1e-5  # the kernel layout is the canonical one


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 5, 8, 16, 64, 512])
@pytest.mark.parametrize("n,k", [(4608, 4096), (4096, 4096), (32768, 4096), (4096, 16384)])
def test_kernel_int4_matmul_gpu_8b_shapes(m, n, k):
    pw = K.repack_int4(random_int4(n, k, 128, act_order=(m == 5)))
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    res = torch.randn(m, n // 2, device="cuda", dtype=torch.bfloat16)
    assert rel_err(K.int4_matmul(x, pw), K.int4_matmul_ref(x, pw)) < 1e-2
    assert rel_err(K.int4_matmul(x, pw, res, swiglu=True), K.int4_matmul_ref(x, pw, res, swiglu=True)) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("asm", [True, False])
@pytest.mark.parametrize("m,group", [(1, 128), (8, 128), (16, 32), (37, 64)])
def test_kernel_int4_mma_gpu_split_k_is_stable(asm, m, group):
    """PTX and plain nibble unpacking agree with the reference; 50 back-to-back split-K calls give identical
    results (a missing barrier or a stale partial would show as a moving error)."""
    pw = K.repack_int4(random_int4(4608, 4096, group))
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    ref = K.int4_matmul_ref(x, pw)
    outs = []
    for _ in range(50):
        out = torch.full((m, 4608), float("nan"), device="cuda", dtype=torch.bfloat16)
        K._mma(x, pw, out, None, False, None, f32_dot=False, asm=asm, BN=64, SPLIT=8, STAGES=3, num_warps=4)
        outs.append(out)
    assert rel_err(outs[0], ref) < 1e-2
    assert all(torch.equal(o, outs[0]) for o in outs)


@pytest.mark.gpu
@pytest.mark.parametrize("n,k,split", [(4608, 4096, 4), (4096, 16384, 2), (32768, 4096, 1)])
def test_kernel_int4_gemv2_gpu_split_k_is_stable(n, k, split):
    """The M = 1 GEMV at the 8B shapes with bf16 x (the decode step's): close to the reference, and 50 back-to-back
    split-K calls give identical results (a missing barrier or a stale partial would show as a moving error)."""
    pw = K.repack_int4(random_int4(n, k, 128))
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    ref = K.int4_matmul_ref(x, pw)
    outs = []
    for _ in range(50):
        out = torch.full((1, n), float("nan"), device="cuda", dtype=torch.bfloat16)
        K._gemv2(x, pw, out, None, False, None, BN=16, BK=512, SPLIT=split, num_warps=2)
        outs.append(out)
    assert rel_err(outs[0], ref) < 1e-2
    assert all(torch.equal(o, outs[0]) for o in outs)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [2, 8, 16])
@pytest.mark.parametrize("n,k,group", [(960, 576, 32), (3072, 576, 32), (576, 1536, 32), (1280, 1024, 128),
                                       (8192, 1024, 128), (1024, 4096, 128)])
def test_kernel_int4_gemv_rows_gpu_small_layers(m, n, k, group):
    """smollm2 / MiniCPM4-0.5B layers at verification sizes: the GEMV over rows and the tensor-core kernel both
    match the reference (whichever `use_gemv` picks)."""
    pw = K.repack_int4(random_int4(n, k, group))
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    res = torch.randn(m, n // 2, device="cuda", dtype=torch.bfloat16)
    ref = K.int4_matmul_ref(x, pw, res, swiglu=True)
    for launch in (lambda *a: K._gemv(*a, BN=8, BK=256, num_warps=4),
                   lambda *a: K._mma(*a, f32_dot=False, BN=64, SPLIT=1, STAGES=2, num_warps=4),
                   lambda *a: K._mma(*a, f32_dot=False, BN=32, SPLIT=2, STAGES=2, num_warps=4)):
        out = torch.full((m, n // 2), float("nan"), device="cuda", dtype=torch.bfloat16)
        launch(x, pw, out, res, True, None)
        assert rel_err(out, ref) < 1e-2


_SMOL, _8B = (6, 576, 960, 1536, 32), (2, 4096, 4608, 16384, 128)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n_layers,hidden,qkv,inter,group", [
    (1, *_SMOL), (4, *_SMOL), (32, *_SMOL), (1, *_8B), (4, *_8B),
    # H200 2026-11-23: with PDL forced into the split-K tensor-core kernel this case missed the reference
    # (PDL_SMALL_M is off by default; not yet known whether PDL or M = 32 at these shapes is the cause)
    pytest.param(32, *_8B, marks=pytest.mark.xfail(reason="PDL in the split-K MMA kernel, 8B, M=32", strict=False)),
])
def test_kernel_int4_pdl_chain_in_cuda_graph(m, n_layers, hidden, qkv, inter, group, monkeypatch):
    """A decode step's chain of int4 matmuls (norm prologues, residual and SwiGLU epilogues, each reading the one
    before's output), captured in a CUDA graph with PDL on in every kernel, replays to the reference chain on
    fresh input. (Two configs per kernel: the autotuner's choice is not what this checks.)"""
    from engine.kernels import pdl

    if not pdl.enabled("cuda"):
        pytest.skip("PDL needs a Hopper GPU")
    from engine.kernels.int4 import layout

    monkeypatch.setattr(layout, "PDL_SMALL_M", True)
    for kernel in (K._gemv_kernel, K._gemv2_kernel, K._gemv_rows_kernel, K._mma_kernel):
        monkeypatch.setattr(kernel, "configs", kernel.configs[:2])
    shapes = {"qkv": (qkv, hidden), "o": (hidden, hidden), "gu": (2 * inter, hidden), "down": (hidden, inter)}
    ws = [{name: K.repack_int4(random_int4(n, k, group)) for name, (n, k) in shapes.items()} for _ in range(n_layers)]
    nw = torch.rand(hidden, device="cuda") + 0.5

    def rms(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * nw

    def step(h, ref=False):
        mm = K.int4_matmul_ref if ref else K.int4_matmul
        for w in ws:
            if ref:
                q = mm(rms(h), w["qkv"])
                h = mm(q[:, :hidden].contiguous(), w["o"], h)
                h = mm(mm(rms(h), w["gu"], swiglu=True), w["down"], h)
            else:
                q = mm(h, w["qkv"], norm=(nw, 1e-5), out_dtype=torch.float32)
                h = mm(q[:, :hidden], w["o"], residual=h)
                h = mm(mm(h, w["gu"], swiglu=True, norm=(nw, 1e-5), out_dtype=torch.float32), w["down"], residual=h)
        return h

    h = torch.randn(m, hidden, device="cuda")
    step(h)  # autotune and compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(h)
    for _ in range(3):
        h.copy_(torch.randn_like(h))
        out.fill_(float("nan"))
        graph.replay()
        assert rel_err(out, step(h, ref=True)) < 1e-3
