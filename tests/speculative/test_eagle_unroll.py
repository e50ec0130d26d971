"""Training-time test (`TrainConfig.unroll`): the unrolled pass gives each draft depth exactly the features the
drafter computes for that node, and training with it runs."""
from __future__ import annotations

import torch

from engine.speculative.eagle import EagleHead, EagleConfig
from engine.speculative.train import _unrolled, unroll_mask


def _head(seed: int = 0) -> EagleHead:
    torch.manual_seed(seed)
    head = EagleHead(EagleConfig(32, 64, 1, 4, 2, 8, 50, 1e-5))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return head.eval()


def _rope(T: int, D: int = 8):
    inv = 1.0 / 10000 ** (torch.arange(0, D, 2).float() / D)
    ang = torch.arange(T).float()[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], -1)
    return ang.cos()[None], ang.sin()[None]


def test_unroll_mask_small_case():
    m = unroll_mask(3, 2)
    # step 0: causal; step 1 at r sees step-0 keys up to r - 1 and itself
    assert m[:3, :3].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert not m[:3, 3:].any()
    assert m[3:, :3].tolist() == [[False, False, False], [True, False, False], [True, True, False]]
    assert m[3:, 3:].tolist() == [[True, False, False], [False, True, False], [False, False, True]]


def test_unrolled_depths_equal_the_drafters_chain():
    """Depth d + 1 at position r (context committed up to c = r - d) equals running the head causally over the
    committed pairs followed by the chain of its own features with the true tokens, as the drafter does."""
    head = _head()
    T, H = 10, 32
    g = torch.Generator().manual_seed(1)
    emb, hid = torch.randn(1, T, H, generator=g), torch.randn(1, T, H, generator=g)
    cos, sin = _rope(T)
    with torch.no_grad():
        f0 = head(emb, hid, cos, sin)
        out = _unrolled(head, emb, hid, cos, sin, 3)  # [1, 3T, H]
        assert torch.allclose(out[:, :T], f0, atol=1e-5)
        for c in (0, 3, 6):
            fs, f = [], f0[:, c]
            for d in (1, 2):  # the node at depth d + 1 sits at position c + d
                n = c + d + 1
                e = torch.cat([emb[:, :c + 1]] + [emb[:, c + k:c + k + 1] for k in range(1, d + 1)], 1)
                x = torch.cat([hid[:, :c + 1]] + [q[:, None] for q in fs + [f]], 1)
                y = head(e, x, cos[:, :n], sin[:, :n])[:, -1]
                assert torch.allclose(out[:, d * T + c + d], y, atol=1e-5), (c, d)
                fs.append(f)
                f = y


def test_train_with_unroll_runs_and_learns(tmp_path):
    from engine.speculative.train import TrainConfig, train_head
    from test_eagle_drafter import tiny_engine

    eng = tiny_engine(tmp_path / "m", max_seq_len=64)
    corpus = tmp_path / "c.txt"
    g = torch.Generator().manual_seed(0)
    corpus.write_text(" ".join(f"w{int(i)}" for i in torch.randint(0, 300, (600,), generator=g)))
    losses = []
    cfg = TrainConfig(steps=25, batch=4, seq_len=24, lr=3e-3, top=64, unroll=3)
    report = train_head(eng, corpus, tmp_path / "head", cfg, progress=lambda s, m: losses.append(m["loss"]))
    assert report["steps"] == 25 and (tmp_path / "head" / "model.safetensors").is_file()
    assert sum(losses[-5:]) < sum(losses[:5])
