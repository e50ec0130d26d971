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
