"""The persistent decode-layers kernel (engine/kernels/fused_decode.py) against its reference (the per-op path in
plain PyTorch): tiny shapes under the interpreter (each phase its own launch there), GQA groups that are not
powers of two, K not a power of two, both group sizes, one and several attention splits, and repeated steps
(the cache written by one step is read by the next)."""
from __future__ import annotations

import math
import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine.kernels.fused_decode import DecodeLayers, decode_layers, decode_layers_ref  # noqa: E402
from tests.tiny_weights import quantize  # noqa: E402


def _layers(L, H, I, nh, kvh, d, group, device, seed=0, rs=1.0):
    g = torch.Generator().manual_seed(seed)

    def q(n, k, f=1.0):
        return quantize(torch.randn(n, k, generator=g) * f / math.sqrt(k), group).to(device)

    w = DecodeLayers.pack([q((nh + 2 * kvh) * d, H) for _ in range(L)], [q(H, nh * d, rs) for _ in range(L)],
                          [q(2 * I, H) for _ in range(L)], [q(H, I, rs) for _ in range(L)],
                          [(1 + 0.1 * torch.randn(H, generator=g)).to(device) for _ in range(L)],
                          [(1 + 0.1 * torch.randn(H, generator=g)).to(device) for _ in range(L)], nh, kvh, d, 1e-5,
                          d ** -0.5)
    return w, g


def _step_inputs(g, L, H, kvh, d, cap, pos, device):
    x = torch.randn(1, H, generator=g).to(device)
    ang = torch.rand(1, d // 2, generator=g) * 6.28
    cos, sin = torch.cat([ang.cos()] * 2, -1).to(device), torch.cat([ang.sin()] * 2, -1).to(device)
    kc = torch.randn(L, 2, kvh, cap, d, generator=g).to(device)
    vc = torch.randn(L, 2, kvh, cap, d, generator=g).to(device)
    return x, cos, sin, kc, vc, torch.tensor([1], dtype=torch.int32, device=device), \
        torch.tensor([pos], dtype=torch.int32, device=device)


@pytest.mark.parametrize("H,I,nh,kvh,group,cap,pos", [
    (64, 96, 3, 1, 32, 40, 0),  # group of 3 heads, first position, one split
    (96, 128, 4, 2, 32, 200, 130),  # K = 96 (not a power of 2), several splits with an empty one
    (128, 128, 4, 2, 128, 80, 77),  # group 128
])
def test_matches_reference(H, I, nh, kvh, group, cap, pos):
    L, d = 2, 32
    w, g = _layers(L, H, I, nh, kvh, d, group, DEVICE, rs=0.7)
    x, cos, sin, kc, vc, rows, p = _step_inputs(g, L, H, kvh, d, cap, pos, DEVICE)
    kc2, vc2 = kc.clone(), vc.clone()
    want = decode_layers_ref(x.clone(), w, cos, sin, kc2, vc2, rows, p)
    got = decode_layers(x.clone(), w, cos, sin, kc, vc, rows, p)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(kc, kc2, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(vc, vc2, atol=2e-4, rtol=2e-4)


def test_consecutive_steps_read_their_own_cache_writes():
    L, H, I, nh, kvh, d = 2, 64, 64, 2, 1, 32
    w, g = _layers(L, H, I, nh, kvh, d, 32, DEVICE, seed=3)
    x, cos, sin, kc, vc, rows, p = _step_inputs(g, L, H, kvh, d, 100, 60, DEVICE)
    kc2, vc2 = kc.clone(), vc.clone()
    for step in range(2):
        p = torch.tensor([60 + step], dtype=torch.int32, device=DEVICE)
        want = decode_layers_ref(x.clone(), w, cos, sin, kc2, vc2, rows, p)
        got = decode_layers(x.clone(), w, cos, sin, kc, vc, rows, p, max_len=100)
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)
        x = got


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs CUDA (the engine's graph decode)")
def test_engine_greedy_tokens_equal_plain_engine(tmp_path, monkeypatch):
    """A random MiniCPM4-shaped int4 model, fp32 on the GPU: greedy tokens of the CUDA-graph engine with the fused
    decode-layers kernel (CPM_FUSED_DECODE=1) equal the plain-PyTorch engine's, across both length regimes. Both
    prefill through the plain path (same cache), so only decode differs."""
    from engine import ops
    from tests.engine.test_engine_cuda import cuda_runner, prompt, write_minicpm

    torch.backends.cuda.matmul.allow_tf32 = False
    monkeypatch.setenv("CPM_FUSED_DECODE", "1")
    path = write_minicpm(tmp_path / "m")
    ids = prompt(370)
    out = {}
    try:
        for fused in (False, True):
            r = cuda_runner(path, torch.float32, int4=True, max_seq_len=512)
            ops.KERNELS = False
            first = int(r.prefill(ids).argmax(-1))
            ops.KERNELS = fused
            out[fused] = [first] + [t for chunk in r.greedy_chunks(first, len(ids), 40) for t in chunk]
            assert (getattr(r.model, "_decode_pack", None) is not None) == fused
    finally:
        ops.KERNELS = True
    assert out[False] == out[True]
