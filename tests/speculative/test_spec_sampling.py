"""Speculative sampling keeps the target's distribution (chi-square tests, fixed seeds).

Unit level: the recursive rejection walk over a tree, with drafts drawn from a reported q and with
deterministic drafts (q = None, duplicates included), against a known two-step target. End to end: a tiny
MiniCPM-shaped model, the joint distribution of two speculated tokens against the model's exact one.
"""
from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from engine.sampling import Sampler, SamplingParams
from engine.speculative import Draft, speculative_stream
from engine.speculative.verify import accept
from spec_models import SampledTreeDrafter, tiny_minicpm_engine

torch.set_num_threads(1)
V = 6


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square goodness of fit; cells expected below 5 are pooled into one."""
    n = counts.sum()
    exp = probs.flatten() * n
    obs = counts.flatten().float()
    small = exp < 5
    if small.any():
        exp = torch.cat([exp[~small], exp[small].sum()[None]])
        obs = torch.cat([obs[~small], obs[small].sum()[None]])
    return float(chisquare(obs.numpy(), exp.numpy() * (obs.sum() / exp.sum()).item()).pvalue)


def two_step_target(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(V, generator=g) * 1.5
    table = torch.randn(V, V, generator=g) * 1.5  # logits of the step after token t: table[t]
    return root, table


def run_unit(draft_fn, params: SamplingParams, n: int = 8000):
    root, table = two_step_target()
    counts = torch.zeros(V, V, dtype=torch.long)
    for i in range(n):
        params.seed = i
        sampler = Sampler(params, [0], torch.device("cpu"))
        draft = draft_fn(i)
        logits = torch.cat([root[None], table[draft.tokens]]) if len(draft.tokens) else root[None]
        out = accept(draft, logits, sampler).tokens
        if len(out) == 1:  # the next step, decoded plainly
            out.append(sampler(table[out[0]].clone()))
        counts[out[0], out[1]] += 1
    p1 = Sampler(params, [0], torch.device("cpu")).probs(root)
    p2 = torch.stack([Sampler(params, [0], torch.device("cpu")).probs(table[t]) for t in range(V)])
    return counts, p1[:, None] * p2


def q_tree(i: int) -> Draft:
    """Two root children and one grandchild each, drawn i.i.d. from q1 and q2 (q reported)."""
    g = torch.Generator().manual_seed(10_000 + i)
    q1 = torch.softmax(torch.tensor([2.0, 0, 0, 1, 0, -1]), -1)
    q2 = torch.softmax(torch.tensor([0.0, 1, 2, 0, -1, 0]), -1)
    a = torch.multinomial(q1, 2, replacement=True, generator=g)
    b = torch.multinomial(q2, 2, replacement=True, generator=g)
    return Draft(torch.cat([a, b]), torch.tensor([-1, -1, 0, 1]), torch.stack([q1, q1, q2, q2]))


def fixed_tree(i: int) -> Draft:
    """A deterministic tree (q = None) with a duplicate sibling: token 3 twice under the root."""
    return Draft(torch.tensor([3, 1, 3, 4, 0]), torch.tensor([-1, -1, -1, 0, 1]))


@pytest.mark.parametrize("draft_fn,params", [
    (q_tree, SamplingParams(temperature=1.0)),
    (fixed_tree, SamplingParams(temperature=0.7, top_k=4)),
    pytest.param(q_tree, SamplingParams(temperature=0.7, top_k=4), marks=pytest.mark.slow),
    pytest.param(fixed_tree, SamplingParams(temperature=1.0), marks=pytest.mark.slow),
])
def test_rejection_walk_keeps_target_distribution(draft_fn, params):
    """(A residual that forgets max(p - q, 0) fails this at p < 1e-10 with these seeds.)"""
    counts, probs = run_unit(draft_fn, params)
    assert chi2_pvalue(counts, probs) > 1e-3
    # the test has power: the same counts are far from what the draft alone would give
    q_only = torch.full((V, V), 1.0 / V**2)
    assert chi2_pvalue(counts, q_only) < 1e-6


@pytest.mark.parametrize("n", [1200, pytest.param(5000, marks=pytest.mark.slow)])
def test_end_to_end_joint_distribution_tiny_model(tmp_path, n):
    """Tokens 2 and 3 of each generation come from tree verification; their joint distribution (given the
    sampled first token) must be the model's: sum over t1 of P(t1) P(t2|t1) P(t3|t1,t2)."""
    engine = tiny_minicpm_engine(tmp_path, vocab=V, logit_gain=8.0)
    prompt = [1, 4, 2]
    with torch.inference_mode():
        def next_probs(ids):
            from engine.speculative.decode import prefill_hidden
            return torch.softmax(engine.model.logits(prefill_hidden(engine, ids)[-1]), -1)

        exact = torch.zeros(V, V)
        p1 = next_probs(prompt)
        for t1 in range(V):
            p2 = next_probs(prompt + [t1])
            for t2 in range(V):
                exact[t2] += p1[t1] * p2[t2] * next_probs(prompt + [t1, t2])
    counts = torch.zeros(V, V, dtype=torch.long)
    accepted = 0
    for i in range(n):
        params = SamplingParams(max_tokens=3, temperature=1.0, seed=i)
        res = list(speculative_stream(engine, prompt, params, SampledTreeDrafter(V, width=2, depth=2, seed=i)))[-1].result
        counts[res.token_ids[1], res.token_ids[2]] += 1
        accepted += res.spec.accepted
    assert accepted > n // 5  # drafts were really accepted, not just replaced by the target's own samples
    assert chi2_pvalue(counts, exact) > 1e-3
