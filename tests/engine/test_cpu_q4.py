"""The engine's CPU int4 GEMV (engine/cpu_q4.c via engine/cpu_q4.py) against the dequantized fp32 reference."""
from __future__ import annotations

import pytest
import torch

from engine import cpu_q4
from engine.quant import Int4Weight, dequantize, pack_int4

pytestmark = pytest.mark.skipif(not cpu_q4.available(), reason="no C compiler or no AVX2 here")


def _weight(n: int, k: int, group: int, seed: int = 0) -> Int4Weight:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g)
    return Int4Weight(pack_int4(codes), torch.rand(n, k // group, generator=g) * 0.02 + 1e-3,
                      -torch.rand(n, k // group, generator=g) * 0.1, group)


@pytest.mark.parametrize("n,k,group,m", [(64, 96, 32, 1), (40, 256, 128, 3), (8, 64, 64, 7)])
def test_exact_when_activations_are_int16_representable(n, k, group, m):
    """x = per-group power-of-two scale x integers with max 32767: the int16 step is lossless, so only fp32
    rounding separates the kernel from the reference (this checks the nibble order, groups, mins, rows)."""
    w = _weight(n, k, group)
    g = torch.Generator().manual_seed(1)
    xi = torch.randint(-32767, 32768, (m, k // 32, 32), generator=g)
    xi[:, :, 5] = 32767  # the group's max: dx = 2^-s exactly, so xq = xi
    x = (xi * 2.0 ** -torch.randint(12, 20, (m, k // 32, 1), generator=g)).reshape(m, k).float()
    ref = x.double() @ dequantize(w).double().t()
    got = cpu_q4.cpu_q4_linear(x, cpu_q4.to_cpu_q4(w))
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


def test_close_on_real_valued_activations():
    w = _weight(256, 576, 32)
    x = torch.randn(2, 1, 576)
    ref = x @ dequantize(w).t()
    got = cpu_q4.cpu_q4_linear(x, cpu_q4.to_cpu_q4(w))
    assert got.shape == (2, 1, 256)
    assert ((got - ref).norm() / ref.norm()) < 1e-4  # int16 activations per 32 values


def test_act_order_and_odd_groups_are_left_to_other_kernels():
    w = _weight(16, 64, 32)
    assert cpu_q4.to_cpu_q4(Int4Weight(w.packed, w.scales, w.mins, 32, torch.randperm(64))) is None
    assert cpu_q4.to_cpu_q4(Int4Weight(w.packed[:, :8], w.scales[:, :1], w.mins[:, :1], 16)) is None


def test_default_cpu_engine_runs_on_it_and_answers(smollm2_path):
    from engine import Engine, SamplingParams

    eng = Engine.load(str(smollm2_path), device="cpu", max_seq_len=256)
    assert isinstance(eng.model.blocks[0].gate_up.fast, cpu_q4.CpuQ4)
    r = eng.chat([{"role": "user", "content": "What is the capital of France?"}], SamplingParams(max_tokens=16))
    assert "Paris" in r.text


def test_whole_layer_decode_in_c_matches_the_python_layer(smollm2_path):
    """q4_layer_forward (LayerStep) against model.Block's plain path on the same int4 kernel: logits over 6
    decode steps (cache rows past max_seq_len 64 and the head included) and the greedy tokens."""
    from engine import Engine

    eng = Engine.load(str(smollm2_path), device="cpu", max_seq_len=100)
    steps = [b.cpu_step for b in eng.model.blocks]
    assert all(s is not None for s in steps)

    def run(in_c: bool) -> list[torch.Tensor]:
        for b, s in zip(eng.model.blocks, steps):
            b.cpu_step = s if in_c else None
        out = []
        with torch.inference_mode():
            tok = int(eng.runner.prefill(list(range(100, 180))).argmax())
            for i in range(6):
                out.append(eng.runner.decode_one(tok, 80 + i).clone())
                tok = int(out[-1].argmax())
        return out

    plain, fused = run(False), run(True)
    for a, b in zip(plain, fused):
        assert int(a.argmax()) == int(b.argmax())
        assert (a - b).norm() / a.norm() < 1e-2
