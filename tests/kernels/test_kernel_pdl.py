"""PDL seam: a kernel taking part gives the same result with and without it (interpreter: always without)."""
from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from engine.kernels import pdl  # noqa: E402


@triton.jit
def _chain_kernel(x_ptr, w_ptr, y_ptr, n, PDL: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    w = tl.load(w_ptr + offs, mask=mask)  # constant input: may be read before the wait
    pdl.launch_dependents(PDL)
    pdl.wait(PDL)
    x = tl.load(x_ptr + offs, mask=mask)  # written by the kernel before: only after the wait
    tl.store(y_ptr + offs, x * w + 1.0, mask=mask)


def _chain(x, w, steps, on):
    for _ in range(steps):
        y = torch.empty_like(x)
        _chain_kernel[(triton.cdiv(x.numel(), 128),)](x, w, y, x.numel(), PDL=on, BLOCK=128,
                                                       **pdl.launch_kwargs(on))
        x = y
    return x


def test_pdl_off_on_cpu_and_interpreter():
    if DEVICE == "cpu":
        assert not pdl.enabled("cpu") and not pdl.enabled()
    assert pdl.launch_kwargs(False) == {} and pdl.launch_kwargs(True) == {"launch_pdl": True}


def test_pdl_chain_matches_plain_math():
    x = torch.randn(300, device=DEVICE)
    w = torch.rand(300, device=DEVICE)
    ref = x.clone()
    for _ in range(5):
        ref = ref * w + 1.0
    on = pdl.enabled(DEVICE)
    torch.testing.assert_close(_chain(x, w, 5, on), ref)


@pytest.mark.gpu
def test_pdl_chain_in_cuda_graph():
    if not pdl.enabled("cuda"):
        pytest.skip("PDL needs a Hopper GPU")
    x = torch.randn(1 << 20, device="cuda")
    w = torch.rand(1 << 20, device="cuda")
    _chain(x, w, 2, True)  # compile outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = _chain(x, w, 20, True)
    x.normal_()
    graph.replay()
    ref = x.clone()
    for _ in range(20):
        ref = ref * w + 1.0
    torch.testing.assert_close(out, ref)
