"""The Eagle / FR-Spec drafter on real engines: its cached head state equals a from-scratch recompute, every
tree node is a top-`width` child under the head's distribution along its own ancestor path (tree mask and
slots right), greedy speculation is token-identical to plain decoding (tiny MiniCPM with a random head, and
smollm2-135m in fp32 on CPU), sampling keeps the target's distribution (chi-square), and `cpm spec train`
reduces its loss and writes a head that loads."""
from __future__ import annotations

import json
import random

import pytest
import torch

from engine.errors import EngineError
from engine.sampling import SamplingParams
from engine.speculative import speculative_stream
from engine.speculative.decode import prefill_hidden
from engine.speculative.eagle import EagleHead, config_for_target
from engine.speculative.eagle_drafter import load_eagle_drafter, parse_spec_dir
from spec_models import tiny_minicpm_engine

torch.set_num_threads(1)


def tiny_engine(path, **kw):
    path.mkdir(parents=True, exist_ok=True)
    return tiny_minicpm_engine(path, **kw)


def random_head(engine, path, fr: list[int] | None, seed: int = 0, std: float = 0.08):
    torch.manual_seed(seed)
    head = EagleHead(config_for_target(engine.model.cfg))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=std)
    head.save(path, engine.model.cfg, fr, dtype=torch.float32)
    return path


def ref_outputs(d, tokens: list[int], hidden: torch.Tensor) -> torch.Tensor:
    """The head over all pairs from scratch (causal, no cache, positions 0..T-1)."""
    emb = torch.nn.functional.embedding(torch.tensor(tokens), d.engine.model.embed) * d.scale_emb
    T = len(tokens)
    with torch.no_grad():
        return d.head(emb[None], hidden[None], d.cos[None, :T], d.sin[None, :T])[0]


@pytest.fixture
def tiny(tmp_path):
    eng = tiny_engine(tmp_path / "m", max_seq_len=96)
    fr = list(range(0, 320, 2))  # a 160-id "frequency" list: draft ids are even only
    return eng, random_head(eng, tmp_path / "h", fr)


def test_cached_state_matches_recompute(tiny):
    eng, path = tiny
    d = load_eagle_drafter(eng, path)
    ids = list(range(3, 20))
    with torch.inference_mode():
        h = prefill_hidden(eng, ids)
        d.start(ids, h, 42)
        extra = torch.randn(4, 64)
        d.commit([7, 8, 9, 10], extra)  # hidden[i] at position len(ids)+i, next token tokens[i]
    pairs = ids[1:] + [42, 7, 8, 9, 10]
    ref = ref_outputs(d, pairs, torch.cat([h, extra]))
    assert d.n == len(pairs)
    assert torch.allclose(d.f_root, ref[-1], atol=1e-5)


def test_tree_nodes_are_top_children_along_their_path(tiny):
    eng, path = tiny
    W, D = 3, 3
    d = load_eagle_drafter(eng, f"{path}?depth={D}&width={W}&tree=12")
    ids = list(range(30, 50))
    with torch.inference_mode():
        h = prefill_hidden(eng, ids)
        d.start(ids, h, 5)
        draft = d.propose(SamplingParams())
    n = len(draft.tokens)
    assert 0 < n <= 12 and draft.q is None
    par = draft.parents.tolist()
    assert all(-1 <= p < i for i, p in enumerate(par))  # topological
    allowed = set(d.freq_ids.tolist())
    assert all(t in allowed for t in draft.tokens.tolist())  # FR-pruned head: kept ids only
    base_tokens, base_hidden = ids[1:] + [5], h

    def path_of(i):
        out = []
        while i >= 0:
            out.append(i)
            i = par[i]
        return out[::-1]

    for i in range(n):
        anc = path_of(i)[:-1]
        assert len(anc) < D
        toks, hid = list(base_tokens), base_hidden
        f = ref_outputs(d, toks, hid)[-1]
        for a in anc:  # the head fed its own feature, one ancestor at a time
            toks, hid = toks + [int(draft.tokens[a])], torch.cat([hid, f[None]])
            f = ref_outputs(d, toks, hid)[-1]
        top = d.freq_ids[torch.topk(d.logits(f), W).indices].tolist()
        assert int(draft.tokens[i]) in top


def test_static_shape_tree_equals_eager(tiny):
    """The form captured in a CUDA graph on GPU (slots/positions/mask computed on the device over the whole
    head cache) drafts the same tree as the eager form."""
    eng, path = tiny
    d = load_eagle_drafter(eng, f"{path}?depth=4&width=3&tree=16")
    assert not d.use_graph  # CPU: no graphs
    ids = list(range(40, 61))
    with torch.inference_mode():
        d.start(ids, prefill_hidden(eng, ids), 8)
        d.commit([3, 4], torch.randn(2, 64))
        eager = d._tree_nodes(4, d.f_root, d.n)
        static = d._tree_nodes(4, d.f_root, torch.tensor(d.n))
    assert torch.equal(eager[0], static[0]) and torch.equal(eager[1], static[1])


def test_static_shape_commit_equals_eager(tiny):
    """The commit pass in the padded static form (captured per length bucket on GPU) gives the eager result."""
    eng, path = tiny
    ids = list(range(60, 80))
    hid = torch.randn(3, 64)
    out = []
    for static in (False, True):
        d = load_eagle_drafter(eng, path)
        with torch.inference_mode():
            d.start(ids, prefill_hidden(eng, ids), 8)
            n = d.n
            if static:
                pad = torch.cat([hid, torch.zeros(5, 64)])
                f = d._commit_static(torch.tensor([5, 6, 7, 0, 0, 0, 0, 0]), pad, torch.tensor(n), torch.tensor(3))
            else:
                d.commit([5, 6, 7], hid)
                f = d.f_root
        out.append((f, d.k[:, :, :, :n + 3].clone()))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-5) and torch.allclose(out[0][1], out[1][1], atol=1e-6)


def test_chain_when_width_is_one(tiny):
    eng, path = tiny
    d = load_eagle_drafter(eng, f"{path}?depth=4&width=1")
    with torch.inference_mode():
        d.start(list(range(5)), prefill_hidden(eng, list(range(5))), 9)
        draft = d.propose(SamplingParams())
    assert draft.parents.tolist() == [-1, 0, 1, 2]


@pytest.mark.parametrize("spec", ["?depth=4&width=3&tree=10", "?depth=5&width=1", "?depth=3&width=2&fr=0"])
def test_greedy_identical_tiny_minicpm(tiny, spec):
    eng, path = tiny
    ids = list(range(11, 31))
    params = SamplingParams(max_tokens=40)
    plain = eng.generate(ids, params).token_ids
    d = load_eagle_drafter(eng, f"{path}{spec}")
    result = list(speculative_stream(eng, ids, params, d))[-1].result
    assert result.token_ids == plain and result.spec.steps > 0


def test_greedy_identical_smollm2_fp32(smollm2_path, tmp_path):
    from engine import Engine
    from engine.speculative.train import _init_from_target

    eng = Engine.load(str(smollm2_path), device="cpu", dtype=torch.float32, max_seq_len=256)
    head = EagleHead(config_for_target(eng.config))
    _init_from_target(head, eng.model)  # not trained: acceptance is whatever it is; output must not change
    head.save(tmp_path / "h", eng.config, list(range(4096)))  # a stand-in FR list (EOS id 2 is in it)
    prompt = eng.apply_chat_template([{"role": "user", "content": "Name three uses of retrieval in survey writing."}])
    plain = eng.generate(prompt, SamplingParams(max_tokens=24))
    spec = eng.generate(prompt, SamplingParams(max_tokens=24, spec=f"eagle:{tmp_path / 'h'}?depth=4&width=2&tree=8"))
    assert spec.token_ids == plain.token_ids and spec.spec.steps > 0


def test_sampling_keeps_the_target_distribution(tmp_path):
    """Second generated token (drawn by accepting/rejecting the head's sampled draft, q zero outside the FR
    ids) vs its exact marginal under the target: sum over t1 of p(t1) p(t2 | t1)."""
    from scipy.stats import chisquare

    V = 8
    eng = tiny_engine(tmp_path / "m", vocab=V, max_seq_len=32, logit_gain=20.0)
    path = random_head(eng, tmp_path / "h", [1, 3, 4, 6], std=0.3)
    ids = [1, 2, 3, 4, 5]
    with torch.inference_mode():
        p1 = torch.softmax(eng.runner.prefill(ids)[0], -1)
        exact = sum(p1[a] * torch.softmax(eng.runner.prefill(ids + [a])[0], -1) for a in range(V))
    counts = torch.zeros(V)
    N = 1000
    for s in range(N):
        r = eng.generate(ids, SamplingParams(max_tokens=3, temperature=1.0, seed=s, spec=f"eagle:{path}?depth=2"))
        counts[r.token_ids[1]] += 1
    assert r.spec.drafted > 0
    assert chisquare(counts.numpy(), (exact * N).double().numpy()).pvalue > 1e-3


def test_train_reduces_loss_and_writes_a_loadable_head(tmp_path):
    from engine.speculative.train import TrainConfig, train_head

    eng = tiny_engine(tmp_path / "m", max_seq_len=64)
    rnd = random.Random(0)
    corpus = tmp_path / "c.jsonl"
    # a corpus with structure the head can learn: short repeated phrases
    phrases = [" ".join(f"w{rnd.randrange(320)}" for _ in range(6)) for _ in range(20)]
    corpus.write_text("".join(json.dumps({"text": " ".join(rnd.choice(phrases) for _ in range(10))}) + "\n"
                              for _ in range(100)))
    losses = []
    report = train_head(eng, corpus, tmp_path / "head", TrainConfig(steps=40, batch=4, seq_len=32, lr=3e-3, top=64),
                        progress=lambda step, m: losses.append(m["loss"]))
    assert len(losses) == 40 and sum(losses[-5:]) < 0.92 * sum(losses[:5])
    cfg = json.loads((tmp_path / "head" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["eagle_train"]["steps"] == 40
    d = load_eagle_drafter(eng, tmp_path / "head")
    assert d.freq_ids.numel() == 64 and report["fr_vocab"] == 64
    ids = list(range(3, 20))
    params = SamplingParams(max_tokens=20)
    assert list(speculative_stream(eng, ids, params, d))[-1].result.token_ids == eng.generate(ids, params).token_ids


def test_draft_costs_and_options(tiny):
    eng, path = tiny
    d = load_eagle_drafter(eng, path)
    with pytest.raises(EngineError, match="started"):
        d.draft_costs()
    with torch.inference_mode():
        d.start(list(range(8)), prefill_hidden(eng, list(range(8))), 3)
    costs = d.draft_costs(SamplingParams(), repeats=3)
    assert costs["fr_vocab"] == 160 and costs["vocab"] == 320 and d.pruned
    assert all(costs[k] > 0 for k in ("draft_step_s_full", "draft_step_s_fr", "lm_head_s_full", "lm_head_s_fr"))
    assert parse_spec_dir("/x/h?depth=6&width=2&tree=20&fr=0")[1] == {"depth": 6, "width": 2, "tree_size": 20, "fr": 0}
    with pytest.raises(EngineError, match="bad Eagle option"):
        parse_spec_dir("/x/h?dpth=3")


def test_cpm_spec_train_bad_input_is_one_line(tmp_path, capsys):
    from tui.cli import main

    assert main(["spec", "train", "--model", str(tmp_path / "none"), "--corpus", "c.jsonl", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error" in err
