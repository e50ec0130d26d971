"""The CPU head (engine/cpu_head.py): int8 ranking with a proven bound, exact fp32 rows at the top."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine import cpu_head, cpu_q4
from engine.cpu_head import cpu_head_logits, to_cpu_head


def _case(seed: int, V: int = 4096, H: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(V, H, generator=g) * 0.05
    h = torch.randn(3, H, generator=g) * (1 + 4 * torch.rand(H, generator=g))  # uneven feature scales
    return w, h


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c_kernel", [True, False])  # engine/cpu_q4.c's int8 pass, or torch's
def test_bound_holds_and_top_rows_are_exact(seed, c_kernel, monkeypatch):
    if c_kernel and not cpu_q4.available():
        pytest.skip("no C kernel here")
    monkeypatch.setattr(cpu_q4, "available", lambda: c_kernel)
    w, h = _case(seed)
    head = to_cpu_head(w)
    assert head.c_kernel == c_kernel
    exact = F.linear(h, w)
    if head.c_kernel:
        approx = torch.stack([cpu_q4.q8_linear(row, head.q, head.scales) for row in h])
    else:
        approx = torch.ops.aten._weight_int8pack_mm(h.to(torch.bfloat16), head.q, head.scales).float()
    l1, mx = h.abs().sum(-1, keepdim=True), h.abs().amax(-1, keepdim=True)
    bound = head.half_scale * l1 + head.amax * (l1 * 2.0 ** -8 + mx * (h.shape[-1] / 65534)) + approx.abs() * 2.0 ** -8
    assert ((approx - exact).abs() <= bound).all()
    got = cpu_head_logits(h, head)
    assert torch.equal(got.argmax(-1), exact.argmax(-1))
    for i in range(len(h)):
        top = exact[i] >= exact[i].max() - cpu_head.MARGIN  # the promise: every token this close is exact
        assert top.sum() > 1
        torch.testing.assert_close(got[i][top], exact[i][top], rtol=0, atol=1e-5)
        assert (got[i] <= got[i].max()).all() and (got[i] - exact[i]).abs().le(bound[i] + 1e-5).all()


def test_flat_row_falls_back_to_the_full_fp32_head():
    w, _ = _case(0)
    h = torch.full((1, w.shape[1]), 1e-4)  # logits all ~0: every row is a candidate
    torch.testing.assert_close(cpu_head_logits(h, to_cpu_head(w)), F.linear(h, w), rtol=0, atol=1e-6)


def test_real_model_greedy_tokens_unchanged_by_the_head(smollm2_path):
    """The default CPU engine's greedy tokens with the int8-ranked head equal those with the plain fp32 head."""
    from engine import Engine, SamplingParams

    eng = Engine.load(str(smollm2_path), device="cpu", max_seq_len=256)
    assert isinstance(eng.model.head.fast, cpu_head.CpuHead)
    ids = eng.tokenizer.encode(eng.apply_chat_template([{"role": "user", "content": "Name two planets."}]),
                               add_special_tokens=False)
    fast = eng.generate(ids, SamplingParams(max_tokens=24)).token_ids
    eng.model.head.fast = None
    plain = eng.generate(ids, SamplingParams(max_tokens=24)).token_ids
    assert fast == plain
