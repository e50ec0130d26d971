"""Self-distillation for the Eagle head: prompts from arXiv / BFCL / chat records, the target's own answers, and
`cpm spec train --self-distill` training on them (loss on answer tokens only) from an existing head."""
from __future__ import annotations

import json
import random

import pytest
import torch

from engine.errors import EngineError
from engine.sampling import SamplingParams
from engine.speculative.distill import build_prompts, read_prompts, target_sequences, to_messages
from test_eagle_drafter import random_head, tiny_engine


def _chat_engine(tmp_path):
    eng = tiny_engine(tmp_path / "m", max_seq_len=64)
    # the word-level test tokenizer has no chat template; a plain one keeps every id a real word
    eng.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}w1"
    return eng


def test_prompt_records_become_messages(tmp_path):
    rng = random.Random(0)
    paper = {"title": "A  title", "abstract": "line one\nline two", "authors": "x"}
    m = to_messages(paper, rng)
    text = m[0]["content"]
    assert m[0]["role"] == "user" and ("line one line two" in text or "A title" in text)
    bfcl = {"id": "simple_0", "question": [[{"role": "user", "content": "Find the area."}]], "function": []}
    assert to_messages(bfcl, rng) == [{"role": "user", "content": "Find the area."}]
    assert to_messages({"prompt": "hi"}, rng) == [{"role": "user", "content": "hi"}]
    assert to_messages({"id": 3}, rng) is None
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in (paper, bfcl, {"prompt": "hi"}, {"id": 3})))
    a, b = build_prompts([f], seed=1), build_prompts([f], seed=1)
    assert a == b and len(a) == 3
    assert len(read_prompts(f, limit=2)) == 2
    with pytest.raises(EngineError, match="not found"):
        build_prompts([tmp_path / "none.jsonl"])


def test_target_sequences_are_the_targets_greedy_answers(tmp_path):
    eng = _chat_engine(tmp_path)
    chats = [[{"role": "user", "content": "w5 w9 w14"}], [{"role": "user", "content": "w7 w7 w30 w2 w3"}]]
    seqs = target_sequences(eng, chats, max_new=6)
    assert len(seqs) == 2
    for seq, n in seqs:
        prompt = seq[:n]
        assert seq[n:] == eng.generate(prompt, SamplingParams(max_tokens=6)).token_ids


def test_batched_target_sequences_equal_one_by_one(tmp_path):
    """Three prompts answered in one batch (the device-side greedy loop) give each prompt's own greedy answer,
    cut after a stop token where one comes."""
    from engine.engine import Engine

    one = _chat_engine(tmp_path)
    eng = Engine(one.model, one.tokenizer, one.config, one.device, one.dtype, 64, 3, tmp_path)
    chats = [[{"role": "user", "content": c}] for c in ("w5 w9 w14", "w7 w7 w30 w2 w3", "w1", "w11 w12")]
    seqs = target_sequences(eng, chats, max_new=20)
    assert len(seqs) == 4
    for seq, n in seqs:
        assert seq[n:] == one.generate(seq[:n], SamplingParams(max_tokens=20)).token_ids


def test_self_distill_trains_on_answers_from_a_head(tmp_path):
    from engine.speculative.eagle_drafter import load_eagle_drafter
    from engine.speculative.train import TrainConfig, train_head

    eng = _chat_engine(tmp_path)
    init = random_head(eng, tmp_path / "init", list(range(0, 320, 2)))
    rnd = random.Random(0)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": " ".join(f"w{rnd.randrange(320)}" for _ in range(8))}) + "\n"
                               for _ in range(12)))
    losses = []
    cfg = TrainConfig(steps=30, batch=4, seq_len=32, lr=3e-3, top=64, self_distill=10, gen_tokens=12, init=str(init))
    report = train_head(eng, prompts, tmp_path / "head", cfg, progress=lambda s, m: losses.append(m["loss"]))
    assert report["distill_prompts"] == 10 and report["distill_answer_tokens"] > 0
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    d = load_eagle_drafter(eng, tmp_path / "head")
    assert d.freq_ids.numel() == 64
    with torch.inference_mode():
        saved = dict(d.head.named_parameters())["fc.weight"].float().cpu()
    start = load_eagle_drafter(eng, init).head.fc.weight.float().cpu()
    assert not torch.equal(saved, start)  # trained from the given head, not left as it was


def test_cpm_spec_prompts_writes_train_and_eval(tmp_path, capsys):
    from tui.cli import main

    src = tmp_path / "papers.jsonl"
    src.write_text("".join(json.dumps({"title": f"T{i}", "abstract": f"abstract {i}"}) + "\n" for i in range(10)))
    out, ev = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    assert main(["spec", "prompts", "--from", str(src), "--out", str(out), "--eval-out", str(ev), "--eval", "3"]) == 0
    assert len(out.read_text().splitlines()) == 7 and len(ev.read_text().splitlines()) == 3
    assert main(["spec", "prompts", "--from", str(src), "--out", str(out), "--eval", "3"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
