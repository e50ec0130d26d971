"""The captured verification pass's inputs (engine/speculative/graph.py), derived on the device from one small
metadata copy: token ids, rotary positions, cache slots and the tree mask equal what the eager tree pass uses,
padding rows see the prefix and themselves, and ancestor bits past 31 (up to the sign bit) stay right."""
from __future__ import annotations

import pytest
import torch

from engine.speculative.graph import VerifyGraph
from engine.speculative.verify import depths, tree_mask
from spec_models import tiny_minicpm_engine


@pytest.mark.parametrize("parents,T,committed", [
    ([-1, -1, 0, 0, 2], 8, 37),  # a tree and 2 padding rows
    (list(range(-1, 39)), 64, 17),  # a 40-node chain in the 64-slot bucket
    (list(range(-1, 61)) + [60], 64, 3),  # 64 rows: the last row's own bit is int64's sign bit
])
def test_static_verify_inputs_match_eager_tree_pass(tmp_path, parents, T, committed):
    engine = tiny_minicpm_engine(tmp_path, max_seq_len=128)
    n = len(parents)
    draft = torch.arange(100, 100 + n)
    g = VerifyGraph(engine, T)
    g.load(4, draft, parents, committed)
    tokens, pos, slots, mask, lengths = g.inputs()
    par = torch.tensor(parents)
    assert tokens[0, :n + 1].tolist() == [4] + draft.tolist()
    assert pos.tolist() == [committed + d for d in [0] + depths(par)] + [committed] * (T - n - 1)
    assert slots.tolist() == list(range(committed, committed + T)) and lengths.tolist() == [committed + T]
    want = torch.zeros(T, 128, dtype=torch.bool)
    want[:n + 1, :committed + n + 1] = tree_mask(par, committed, "cpu")[0, 0]
    want[n + 1:, :committed] = True
    want[n + 1:, committed + n + 1:committed + T] = torch.eye(T - n - 1, dtype=torch.bool)
    assert torch.equal(mask, want)


def test_dense_verify_weights_swap_in_and_out(tmp_path, monkeypatch):
    """The dense-weights switch of the verify graph: inside the capture context every int4 projection has its
    dequantized copy (so the pass's logits are the int4 pass's), outside none has."""
    import engine.speculative.graph as G
    from engine.sampling import SamplingParams
    from engine.speculative.drafter import Draft
    from engine.speculative.verify import forward_tree
    from spec_models import int4_layers, tiny_minicpm_engine

    engine = tiny_minicpm_engine(tmp_path)
    int4_layers(engine)
    prompt = list(range(3, 30))
    engine.generate(prompt, SamplingParams(max_tokens=1))
    draft = Draft(torch.tensor([7, 8, 9]), torch.tensor([-1, 0, 0]))
    lins = [lin for b in engine.model.blocks for lin in b.linears()]
    with torch.inference_mode():
        ref = forward_tree(engine, 4, draft, len(prompt))[1]
        monkeypatch.setattr(G, "VERIFY_WEIGHTS", "dense")
        with G._verify_weights(engine):
            assert all(lin.dense is not None for lin in lins)
            dense = forward_tree(engine, 4, draft, len(prompt))[1]
    assert all(lin.dense is None for lin in lins)
    assert torch.allclose(ref, dense, atol=1e-4, rtol=1e-4)
