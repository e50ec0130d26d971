"""The CUDA paged step's wiring, run on CPU: engine/ops.py's kernel branches forced on under TRITON_INTERPRET=1,
so Block._fused's paged attention (rotary writing K/V through the slot mapping into the pool seen as one row,
flash-decoding through the block tables, SDPA over gathered slots for prompt chunks) runs here as it would on a
GPU, and is compared with the plain PyTorch paged path. A tiny random checkpoint, fp32, scattered block tables."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from engine import ops  # noqa: E402
from engine.cache import KVCache, PagedKVCache  # noqa: E402
from engine.config import ModelConfig  # noqa: E402
from engine.model import Transformer  # noqa: E402
from engine.rope import rope_table  # noqa: E402
from engine.runner import Runner  # noqa: E402
from tests.tiny_weights import random_layers  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BS = 16  # small blocks, so short sequences span several


def tiny_runner() -> Runner:
    g = torch.Generator().manual_seed(0)
    H, I, L, V, nh, nkv, D = 64, 128, 2, 96, 4, 2, 32
    cfg = ModelConfig(family="llama", hidden_size=H, intermediate_size=I, num_layers=L, num_heads=nh,
                      num_kv_heads=nkv, head_dim=D, vocab_size=V, max_position_embeddings=128, rms_norm_eps=1e-5,
                      tie_word_embeddings=True)
    t = {"model.embed_tokens.weight": torch.randn(V, H, generator=g) * 0.5,
         "model.norm.weight": 1 + 0.1 * torch.randn(H, generator=g), **random_layers(g, L, H, I, nh, nkv, D)}
    model = Transformer(cfg, t, "tiny").to(DEVICE, torch.float32, cache_dense=False)
    cos, sin = rope_table(cfg, 128)
    return Runner(model, lambda: KVCache(cfg, 1, 128, DEVICE, torch.float32), cos.to(DEVICE), sin.to(DEVICE),
                  block_size=BS)


def serve_two(kernels: bool) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Two sequences on scattered blocks: each prompt in two chunks, then 6 batched greedy decode steps.
    Returns (every step's logits, each sequence's tokens)."""
    ops.KERNELS = kernels
    runner = tiny_runner()
    pool = PagedKVCache(runner.model.cfg, 12, BS, DEVICE, torch.float32)
    tables = [[7, 2, 9], [4, 11, 0, 5]]
    prompts = [torch.randint(0, 96, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (23, 37)]
    logits, toks = [], []
    with torch.inference_mode():
        for table, p in zip(tables, prompts):
            runner.run_paged(pool, [table], [0], [p[:BS]], logits=False)  # a chunk that ends on a block edge
            last = runner.run_paged(pool, [table], [BS], [p[BS:]])
            logits.append(last)
            toks.append([int(last.argmax(-1))])
        pos = [len(p) for p in prompts]
        for _ in range(6):
            step = runner.decode_paged(pool, tables, pos, [t[-1] for t in toks])
            logits.append(step)
            for t, row in zip(toks, step.argmax(-1).tolist()):
                t.append(row)
            pos = [p + 1 for p in pos]
    return logits, toks


def test_kernel_paged_step_equals_plain_paged_path(monkeypatch):
    if DEVICE.type == "cpu":  # the kernel branches on CPU tensors: Triton's interpreter runs them
        monkeypatch.setattr(ops, "kernels_on", lambda x: ops.KERNELS)
    try:
        got, got_toks = serve_two(True)
        want, want_toks = serve_two(False)
    finally:
        ops.KERNELS = True
    assert got_toks == want_toks
    for a, b in zip(got, want):
        assert (a - b).abs().max().item() < 1e-3


@pytest.mark.gpu
def test_paged_graph_replay_equals_eager():
    """On a GPU: the scheduled decode step replayed from its bucket's CUDA graph gives the eager step's logits,
    across buckets (2 rows -> bucket 2, 1 row -> bucket 1, 3 rows -> bucket 4 with a padding row)."""
    runner = tiny_runner()
    pool = PagedKVCache(runner.model.cfg, 16, BS, DEVICE, torch.float32)
    tables = [[7, 2, 9], [4, 11, 0, 5], [1, 3]]
    with torch.inference_mode():
        for i, table in enumerate(tables):
            runner.run_paged(pool, [table], [0], [list(range(3 + i, 23 + i))], logits=False)
        for rows in ([0, 1], [1], [0, 1, 2]):
            t, p, tok = [tables[r] for r in rows], [20 + r for r in rows], [5 + r for r in rows]
            runner.use_graphs = False
            eager = runner.decode_paged(pool, t, p, tok)
            runner.use_graphs = True
            graph = runner.decode_paged(pool, t, p, tok)  # rewrites the same K/V at the same slots
            assert torch.allclose(graph, eager, atol=1e-4), rows
    assert sorted(runner.paged_graphs) == [1, 2, 4]


def test_kernel_paged_graph_step_equals_eager_step(monkeypatch):
    """The captured step of PagedDecodeGraph (its one static input buffer: tokens, positions, slots, lengths,
    tables; spare rows of length 0 writing the trash slot), run eagerly here with the kernel branches on, gives
    the eager paged step's logits and writes the same K/V; the spare row touches no sequence's block."""
    from engine.cuda_graph import PagedDecodeGraph

    if DEVICE.type == "cpu":
        monkeypatch.setattr(ops, "kernels_on", lambda x: ops.KERNELS)
    runner = tiny_runner()
    pools = [PagedKVCache(runner.model.cfg, 12, BS, DEVICE, torch.float32) for _ in range(2)]
    tables, prompts = [[7, 2, 9], [4, 11]], [list(range(5, 30)), list(range(40, 57))]
    with torch.inference_mode():
        for pool in pools:
            pool.k.zero_()  # left uninitialised at allocation: zeroed so the two pools compare
            pool.v.zero_()
            for table, p in zip(tables, prompts):
                runner.run_paged(pool, [table], [0], [p], logits=False)
        want = runner.run_paged(pools[0], tables, [25, 17], [[3], [4]])
        g = PagedDecodeGraph(runner, pools[1], 4)  # two rows in a bucket of 4
        before = pools[1].k.clone()
        g.inputs.copy_(g.input_rows(tables, [25, 17], [3, 4]))
        got = g._step()[0][:2]
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(pools[0].k[:, :12], pools[1].k[:, :12], atol=1e-5)  # the same K/V written
    assert torch.allclose(pools[0].v[:, :12], pools[1].v[:, :12], atol=1e-5)
    changed = (pools[1].k != before).any(-1).any(-1)  # [layers, blocks + 2, slot]: which slots were written
    written = changed.nonzero()[:, 1:].unique(dim=0).tolist()
    assert sorted(map(tuple, written)) == [(2, 9), (11, 1), (13, 0)]  # slot 25 of row 0, 17 of row 1, trash


def test_kernel_paged_greedy_run_equals_single_steps(monkeypatch):
    """PagedDecodeGraph.run_greedy (each step's pick and next slot made on the device, through the block table,
    across a block edge) gives the picks of one eager paged step at a time; the spare row stays in the trash."""
    if DEVICE.type == "cpu":
        monkeypatch.setattr(ops, "kernels_on", lambda x: ops.KERNELS)
    from engine.cuda_graph import PagedDecodeGraph

    runner = tiny_runner()
    pools = [PagedKVCache(runner.model.cfg, 12, BS, DEVICE, torch.float32) for _ in range(2)]
    tables, prompts = [[7, 2, 9], [4, 11, 3]], [list(range(5, 30)), list(range(40, 55))]  # 15 + 4 crosses 16
    with torch.inference_mode():
        for pool in pools:
            pool.k.zero_()  # so that the two pools' K/V compare
            pool.v.zero_()
            for table, p in zip(tables, prompts):
                runner.run_paged(pool, [table], [0], [p], logits=False)
        pos, toks, want = [25, 15], [3, 4], []
        for _ in range(4):
            toks = runner.run_paged(pools[0], tables, pos, [[t] for t in toks]).argmax(-1).tolist()
            want.append(toks)
            pos = [p + 1 for p in pos]
        got = PagedDecodeGraph(runner, pools[1], 4).run_greedy(tables, [25, 15], [3, 4], 4)
    assert got == want
    # each step's K/V at the slot the device computed (slots 25-28 and 15-18, the latter across a block edge)
    assert torch.allclose(pools[0].k[:, :12], pools[1].k[:, :12], atol=1e-5)
    assert torch.allclose(pools[0].v[:, :12], pools[1].v[:, :12], atol=1e-5)
    assert pools[1].k[:, :12].abs().sum() > 0
