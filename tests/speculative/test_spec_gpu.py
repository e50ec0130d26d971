"""On CUDA: tree verification through the captured graph is lossless and matches the eager pass."""
from __future__ import annotations

import pytest
import torch

from engine.sampling import SamplingParams
from engine.speculative import PromptLookupDrafter, speculative_stream
from engine.speculative.drafter import Draft
from engine.speculative.verify import forward_tree
from spec_models import RandomTreeDrafter, int4_layers, tiny_minicpm_engine

pytestmark = pytest.mark.gpu


def _gen(engine, prompt, params, drafter):
    with torch.inference_mode():  # as Engine.stream runs it (the decode graph's buffers are inference tensors)
        return list(speculative_stream(engine, prompt, params, drafter))[-1].result


def test_graph_verify_greedy_identical(tmp_path):
    engine = tiny_minicpm_engine(tmp_path, device="cuda", max_seq_len=256)
    prompt = [5, 17, 99, 3, 250, 17, 99, 3, 41]
    params = SamplingParams(max_tokens=60)
    plain = engine.generate(prompt, params)
    for seed in range(3):
        orc = _gen(engine, prompt, params, RandomTreeDrafter(320, width=3, depth=5, seed=seed, oracle=plain.token_ids))
        assert orc.token_ids == plain.token_ids and orc.spec.accepted > 10
        assert _gen(engine, prompt, params, RandomTreeDrafter(320, 4, 4, seed=seed)).token_ids == plain.token_ids
    assert _gen(engine, prompt, params, PromptLookupDrafter()).token_ids == plain.token_ids
    assert engine.spec_graphs  # the graphs were really used


def test_graph_and_eager_tree_pass_agree(tmp_path):
    engine = tiny_minicpm_engine(tmp_path, device="cuda", max_seq_len=256)
    prompt = list(range(3, 40))
    engine.generate(prompt, SamplingParams(max_tokens=1))  # prompt into the cache
    draft = Draft(torch.tensor([7, 8, 9, 10, 11]), torch.tensor([-1, -1, 0, 0, 2]))
    with torch.inference_mode():
        hg, lg = (t.clone() for t in forward_tree(engine, 4, draft, len(prompt)))
        engine.runner.use_graphs = False
        he, le = forward_tree(engine, 4, draft, len(prompt))
    assert torch.allclose(lg, le, atol=1e-3, rtol=1e-3) and torch.allclose(hg, he, atol=1e-3, rtol=1e-3)


def test_eagle_graphs_match_eager_and_plain(tmp_path):
    """The Eagle drafter's captured draft and commit passes (the default on CUDA) give the eager drafter's
    (`graph=0`) trees, and greedy speculation with them is token-identical to plain decoding."""
    from engine.speculative.eagle_drafter import load_eagle_drafter
    from test_eagle_drafter import random_head

    engine = tiny_minicpm_engine(tmp_path, device="cuda", max_seq_len=256)
    head = random_head(engine, tmp_path / "h", list(range(0, 320, 2)))
    prompt = [5, 17, 99, 3, 250, 17, 99, 3, 41]
    params = SamplingParams(max_tokens=40)
    plain = engine.generate(prompt, params)
    graphed, eager = load_eagle_drafter(engine, head), load_eagle_drafter(engine, f"{head}?graph=0")
    assert graphed.use_graph and not eager.use_graph
    runs = [_gen(engine, prompt, params, d) for d in (graphed, eager)]
    assert graphed.graphs  # the graphs were really captured and used
    assert runs[0].token_ids == runs[1].token_ids == plain.token_ids
    with torch.inference_mode():  # the same state drafted both ways
        a = graphed.propose(params)
        eager.f_root, eager.n = graphed.f_root, graphed.n
        eager.k.copy_(graphed.k)
        eager.v.copy_(graphed.v)
        b = eager.propose(params)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.parents, b.parents)


def test_dense_verify_weights_lossless(tmp_path, monkeypatch):
    """VERIFY_WEIGHTS = "dense": the captured verify pass multiplies with dequantized copies of the int4
    projections; its logits match the int4 pass and greedy speculation stays token-identical to plain decoding
    (int4 decode graphs), while the decode path keeps its int4 weights."""
    import engine.speculative.graph as G
    from engine.quant import Int4Weight

    engine = tiny_minicpm_engine(tmp_path, device="cuda", max_seq_len=256)
    int4_layers(engine)
    prompt = list(range(3, 40))
    draft = Draft(torch.tensor([7, 8, 9, 10, 11]), torch.tensor([-1, -1, 0, 0, 2]))
    engine.generate(prompt, SamplingParams(max_tokens=1))
    out = {}
    for mode in ("int4", "dense"):
        monkeypatch.setattr(G, "VERIFY_WEIGHTS", mode)
        engine.spec_graphs.clear()
        with torch.inference_mode():
            out[mode] = [t.clone() for t in forward_tree(engine, 4, draft, len(prompt), picks=True)]
    assert torch.allclose(out["int4"][1], out["dense"][1], atol=1e-3, rtol=1e-3)
    assert torch.equal(out["int4"][2], out["dense"][2])
    assert all(lin.dense is None and isinstance(lin.weight, Int4Weight)
               for b in engine.model.blocks for lin in b.linears())  # decode still runs int4
    params = SamplingParams(max_tokens=60)
    plain = engine.generate([5, 17, 99, 3, 250, 17, 99, 3, 41], params)
    orc = _gen(engine, [5, 17, 99, 3, 250, 17, 99, 3, 41], params,
               RandomTreeDrafter(320, width=3, depth=5, seed=0, oracle=plain.token_ids))
    assert orc.token_ids == plain.token_ids and orc.spec.accepted > 10
