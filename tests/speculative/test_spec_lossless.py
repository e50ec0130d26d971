"""Greedy speculative decoding is lossless: token-identical to plain decoding, whatever the drafter proposes.

On the real default model (smollm2-135m, int4 GGUF, CPU) with prompt lookup and with tree drafts, and on a
random MiniCPM4-shaped model with random trees (acceptance near zero) and oracle-seeded trees (deep accepted
paths through non-consecutive cache slots, so the KV compaction is exercised).
"""
from __future__ import annotations

import pytest
import torch

from engine.sampling import SamplingParams
from engine.speculative import PromptLookupDrafter, speculative_stream
from spec_models import RandomTreeDrafter, tiny_minicpm_engine

torch.set_num_threads(1)


def spec_generate(engine, prompt, params, drafter):
    ids = engine._ids(prompt)
    chunks = list(speculative_stream(engine, ids, params, drafter))
    result = chunks[-1].result
    assert "".join(c.text for c in chunks) == result.text  # the stream adds up to the final text
    return result


@pytest.fixture(scope="module")
def smol(smollm2_path):
    from engine import Engine

    return Engine.load(str(smollm2_path), device="cpu", max_seq_len=1024)


PROMPTS = [
    [{"role": "user", "content": "Copy this list exactly: apples, pears, plums, cherries, apples, pears, plums."}],
    [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    [{"role": "user", "content": "Write a Python function that adds two numbers."}],
]


@pytest.mark.parametrize("which", [0, 1, pytest.param(2, marks=pytest.mark.slow)])
def test_smollm2_greedy_identical(smol, which):
    prompt = smol.apply_chat_template(PROMPTS[which])
    params = SamplingParams(max_tokens=48)
    plain = smol.generate(prompt, params)
    lookup = spec_generate(smol, prompt, params, PromptLookupDrafter())
    oracle = spec_generate(smol, prompt, params,
                           RandomTreeDrafter(smol.config.vocab_size, width=3, depth=4, seed=which,
                                             oracle=plain.token_ids))
    for r in (lookup, oracle):
        assert r.token_ids == plain.token_ids and r.text == plain.text and r.finish_reason == plain.finish_reason
    assert oracle.spec.accepted > 0  # the tree path was really exercised
    assert oracle.spec.mean_accepted_length > 1.5


def test_smollm2_random_tree_identical(smol):
    prompt = smol.apply_chat_template(PROMPTS[1])
    params = SamplingParams(max_tokens=24)
    plain = smol.generate(prompt, params)
    r = spec_generate(smol, prompt, params, RandomTreeDrafter(smol.config.vocab_size, width=4, depth=3, seed=7))
    assert r.token_ids == plain.token_ids


def test_tiny_minicpm_greedy_identical(tmp_path):
    engine = tiny_minicpm_engine(tmp_path)
    prompt = [5, 17, 99, 3, 250, 17, 99, 3, 41]
    params = SamplingParams(max_tokens=40)
    plain = engine.generate(prompt, params)
    assert plain.finish_reason == "length" and len(plain.token_ids) == 40
    for seed in range(3):
        rnd = spec_generate(engine, prompt, params, RandomTreeDrafter(320, width=3, depth=3, seed=seed))
        assert rnd.token_ids == plain.token_ids
        orc = spec_generate(engine, prompt, params,
                            RandomTreeDrafter(320, width=3, depth=5, seed=seed, oracle=plain.token_ids, hit=0.7))
        assert orc.token_ids == plain.token_ids and orc.spec.accepted > 10
    pl = spec_generate(engine, prompt, params, PromptLookupDrafter())
    assert pl.token_ids == plain.token_ids


def test_repetition_penalty_and_processors_see_each_position(tmp_path):
    """Penalties and logits processors run per accepted position in order, with the ids generated so far."""
    engine = tiny_minicpm_engine(tmp_path)
    prompt = [5, 17, 99, 3, 250]
    calls: dict[str, list] = {"plain": [], "spec": []}

    def banned_evens(log):
        def proc(generated, logits):
            log.append(list(generated))
            logits = logits.clone()
            logits[0::2] = float("-inf")  # odd ids only: a stand-in for a grammar mask
            return logits
        return proc

    plain = engine.generate(prompt, SamplingParams(max_tokens=20, repetition_penalty=1.3,
                                                   logits_processors=[banned_evens(calls["plain"])]))
    params = SamplingParams(max_tokens=20, repetition_penalty=1.3, logits_processors=[banned_evens(calls["spec"])])
    spec = spec_generate(engine, prompt, params, RandomTreeDrafter(320, width=2, depth=4, seed=1,
                                                                   oracle=plain.token_ids))
    assert spec.token_ids == plain.token_ids and all(t % 2 == 1 for t in plain.token_ids)
    assert calls["spec"] == calls["plain"]  # the same calls, in the same order, with the same history


def test_stop_token_inside_accepted_run_cuts_there(tmp_path):
    engine = tiny_minicpm_engine(tmp_path)
    prompt = [5, 17, 99, 3, 250, 17, 99, 3, 41]
    plain = engine.generate(prompt, SamplingParams(max_tokens=30))
    stop_tok = plain.token_ids[12]
    first = plain.token_ids.index(stop_tok)
    params = SamplingParams(max_tokens=30, stop_token_ids=[stop_tok])
    ref = engine.generate(prompt, params)
    assert ref.token_ids == plain.token_ids[:first + 1] and ref.finish_reason == "stop"
    spec = spec_generate(engine, prompt, params, RandomTreeDrafter(320, width=2, depth=6, seed=2, oracle=plain.token_ids,
                                                                   hit=1.0))
    assert spec.token_ids == ref.token_ids and spec.finish_reason == "stop" and spec.text == ref.text


def test_stop_string_and_max_tokens_inside_accepted_run(tmp_path):
    engine = tiny_minicpm_engine(tmp_path)
    prompt = [5, 17, 99, 3, 250, 17, 99, 3, 41]
    plain = engine.generate(prompt, SamplingParams(max_tokens=30))
    word = f"w{plain.token_ids[9]}"
    for params in (SamplingParams(max_tokens=30, stop=[word]), SamplingParams(max_tokens=7)):
        ref = engine.generate(prompt, params)
        spec = spec_generate(engine, prompt, params, RandomTreeDrafter(320, width=2, depth=6, seed=3,
                                                                       oracle=plain.token_ids, hit=1.0))
        assert (spec.token_ids, spec.text, spec.finish_reason) == (ref.token_ids, ref.text, ref.finish_reason)


def test_context_limit_truncates_draft(tmp_path):
    """Near max_seq_len the tree is cut to the slots left; generation ends at the limit like plain decoding."""
    engine = tiny_minicpm_engine(tmp_path, max_seq_len=32)
    prompt = list(range(3, 23))
    params = SamplingParams(max_tokens=100)
    ref = engine.generate(prompt, params)
    spec = spec_generate(engine, prompt, params, RandomTreeDrafter(320, width=3, depth=6, seed=4,
                                                                   oracle=ref.token_ids, hit=1.0))
    assert spec.token_ids == ref.token_ids and len(ref.token_ids) == 32 - len(prompt)
