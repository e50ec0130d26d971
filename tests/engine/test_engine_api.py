"""The Engine API on the real default model: stream/generate/chat agree, stop strings and tokens, seeds,
logits processors, batched generation equal to one-by-one greedy; streaming text across multi-byte chars."""
from __future__ import annotations

import pytest
import torch

from engine.detok import TextTracker


@pytest.fixture(scope="module")
def eng(smollm2_path):
    from engine import Engine

    torch.set_num_threads(2)
    return Engine.load(str(smollm2_path), device="cpu", dtype=torch.float32, max_seq_len=256, max_batch=2)


@pytest.fixture(scope="module")
def tok(smollm2_path):
    from engine.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_path)


def test_stream_pieces_rebuild_multibyte_text(tok):
    text = "Café ☕ — naïve 😀 façade, 東京."
    ids = tok.encode(text, add_special_tokens=False)
    tracker, pieces = TextTracker(tok, []), []
    for i in ids:
        pieces.append(tracker.push(i))
    pieces.append(tracker.finish())
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_stop_string_is_held_back_and_cut(tok):
    ids = tok.encode("one two three four", add_special_tokens=False)
    tracker = TextTracker(tok, [" three"])
    out = "".join(tracker.push(i) for i in ids if not tracker.stopped)
    assert tracker.stopped and out == "one two" and tracker.text == "one two"


def test_chat_stream_generate_agree(eng):
    from engine import SamplingParams

    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    res = eng.chat(msgs, SamplingParams(max_tokens=16))
    assert "Paris" in res.text and res.prompt_tokens > 10 and res.decode_tokens == len(res.token_ids)
    chunks = list(eng.stream(eng.apply_chat_template(msgs), SamplingParams(max_tokens=16)))
    assert "".join(c.text for c in chunks) == res.text and chunks[-1].result.token_ids == res.token_ids
    assert res.finish_reason in ("stop", "length") and res.decode_tok_s > 0


def test_stop_tokens_and_length(eng):
    from engine import SamplingParams

    first = eng.generate("The capital of France is", SamplingParams(max_tokens=6))
    assert first.finish_reason == "length" and first.decode_tokens == 6
    stop_id = first.token_ids[2]
    r = eng.generate("The capital of France is", SamplingParams(max_tokens=6, stop_token_ids=[stop_id]))
    assert r.finish_reason == "stop" and r.token_ids == first.token_ids[:3]


def test_stop_string(eng):
    from engine import SamplingParams

    full = eng.generate("The capital of France is", SamplingParams(max_tokens=12)).text
    cut = full.strip().split()[1]
    r = eng.generate("The capital of France is", SamplingParams(max_tokens=12, stop=[cut]))
    assert r.finish_reason == "stop" and r.text == full[:full.index(cut)]


def test_seeded_sampling_repeats_and_processors_see_generated(eng):
    from engine import SamplingParams

    seen: list[list[int]] = []

    def ban_first_choice(generated, logits):
        seen.append(list(generated))
        return logits

    p = SamplingParams(max_tokens=8, temperature=0.9, top_k=40, top_p=0.9, min_p=0.05, repetition_penalty=1.2,
                       seed=7, logits_processors=[ban_first_choice])
    a = eng.generate("Once upon a time", p)
    b = eng.generate("Once upon a time", SamplingParams(**{**p.__dict__, "logits_processors": []}))
    assert a.token_ids == b.token_ids
    assert seen[0] == [] and seen[-1] == a.token_ids[:-1]


def test_batch_equals_single(eng):
    from engine import SamplingParams

    prompts = ["The capital of France is", "List of colors: red, green,", "def add(a, b):"]
    p = SamplingParams(max_tokens=10)
    batch = eng.generate_batch(prompts, p)
    for prompt, r in zip(prompts, batch):
        assert r.token_ids == eng.generate(prompt, p).token_ids


def test_over_long_prompt(eng):
    from engine.errors import EngineError

    with pytest.raises(EngineError, match="context limit is 256"):
        eng.generate("word " * 300)
