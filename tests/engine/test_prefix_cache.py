"""Automatic prefix caching on the real default model, exact fp32 mode on CPU: a prompt whose first blocks are
cached gives the same tokens as the same prompt computed in full, for 0, 1, many shared full blocks and a shared
partial block; sequences sharing a prefix at the same time each get their own output; later chat turns are
served partly from the cache."""
from __future__ import annotations

import pytest
import torch

BS = 16
BASE = ("You are a careful assistant. Answer briefly and precisely, citing numbers where you can. " * 6).strip()


@pytest.fixture(scope="module")
def eng(smollm2_path):
    from engine import Engine

    torch.set_num_threads(2)
    return Engine.load(str(smollm2_path), device="cpu", dtype=torch.float32, max_seq_len=512, block_size=BS,
                       kv_blocks=128, max_running=8)


def _miss(eng, prompt, params):
    blocks = eng.loop.scheduler.blocks
    blocks.prefix_cache = False
    try:
        return eng.generate(prompt, params)
    finally:
        blocks.prefix_cache = True


def _ids(eng, text):
    return eng.tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("shared_tokens", [0, BS, 4 * BS, 4 * BS + 5])
def test_hit_equals_miss(eng, shared_tokens):
    from engine import SamplingParams

    params = SamplingParams(max_tokens=16)
    base = _ids(eng, BASE)
    assert len(base) > 5 * BS
    first = base[:shared_tokens] + _ids(eng, " Question: what is two plus two?")
    second = base[:shared_tokens] + _ids(eng, " Question: name the largest planet.")
    eng.generate(first, params)  # puts first's full blocks in the cache
    before = eng.stats().cached_tokens
    hit = eng.generate(second, params)
    assert hit.cached_tokens == eng.stats().cached_tokens - before == shared_tokens // BS * BS
    miss = _miss(eng, second, params)
    assert miss.cached_tokens == 0
    assert hit.token_ids == miss.token_ids and hit.text == miss.text


def test_same_prompt_twice_is_served_from_the_cache(eng):
    from engine import SamplingParams

    prompt = _ids(eng, BASE + " Question: what colour is the sky?")
    a = eng.generate(prompt, SamplingParams(max_tokens=12))
    b = eng.generate(prompt, SamplingParams(max_tokens=12))
    assert b.cached_tokens == (len(prompt) - 1) // BS * BS > 0
    assert a.token_ids == b.token_ids


def test_concurrent_sequences_sharing_a_prefix(eng):
    from engine import SamplingParams

    base = _ids(eng, BASE)
    questions = [" Question: what is two plus two?", " Question: name a fruit.", " Question: what is Paris?",
                 " Question: count to three."]
    prompts = [base + _ids(eng, q) for q in questions]
    params = SamplingParams(max_tokens=14)
    alone = [_miss(eng, p, params) for p in prompts]
    eng.generate(prompts[0], params)  # the shared prefix is cached now
    got = eng.generate_batch(prompts, params)
    assert all(g.cached_tokens > 0 for g in got)
    assert [g.token_ids for g in got] == [a.token_ids for a in alone]
    assert eng.stats().kv_blocks_used == 0


def test_later_chat_turns_report_cached_tokens(eng):
    from agents.chat.engine_runner import ChatRequest, EngineRunner

    runner = EngineRunner(eng)
    history = [{"role": "system", "content": BASE}, {"role": "user", "content": "Name a colour."}]
    first = runner.complete(ChatRequest(messages=history, max_tokens=12))
    history += [{"role": "assistant", "content": first.parsed.content},
                {"role": "user", "content": "And another one?"}]
    before = eng.stats().cached_tokens
    runner.complete(ChatRequest(messages=history, max_tokens=12))
    assert eng.stats().cached_tokens - before >= 4 * BS  # the system prompt and the first turn at least
