"""Sampling filters and the repetition penalty equal transformers' own logits processors."""
from __future__ import annotations

import pytest
import torch

from engine.sampling import Sampler, SamplingParams, _warp


@pytest.mark.parametrize("top_k,top_p,min_p", [(5, 1.0, 0.0), (0, 0.8, 0.0), (0, 1.0, 0.1), (20, 0.9, 0.05)])
def test_filters_match_transformers(top_k, top_p, min_p):
    from transformers import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(1, 200, generator=torch.Generator().manual_seed(top_k))
    want = logits.clone()
    if top_k:
        want = TopKLogitsWarper(top_k)(None, want)
    if top_p < 1:
        want = TopPLogitsWarper(top_p)(None, want)
    if min_p:
        want = MinPLogitsWarper(min_p)(None, want)
    got = _warp(logits[0], SamplingParams(top_k=top_k, top_p=top_p, min_p=min_p))
    assert torch.equal(torch.isinf(got), torch.isinf(want[0]))


def test_repetition_penalty_matches_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor

    prompt = [3, 7, 7, 11]
    logits = torch.randn(20)
    want = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([prompt + [5]]), logits.clone()[None])[0]
    s = Sampler(SamplingParams(repetition_penalty=1.3), prompt, torch.device("cpu"))
    s.seen = torch.unique(torch.cat([s.seen, torch.tensor([5])]))  # as after generating token 5
    captured = []
    s.p.logits_processors = [lambda gen, lg: captured.append(lg) or lg]
    s(logits)
    assert torch.allclose(captured[0], want)


def test_seed_reproducible_and_greedy_is_argmax():
    logits = torch.randn(100)
    p = SamplingParams(temperature=0.7, seed=3)
    a = [Sampler(p, [], torch.device("cpu"))(logits) for _ in range(3)]
    assert len(set(a)) == 1
    assert Sampler(SamplingParams(), [], torch.device("cpu"))(logits) == int(logits.argmax())
