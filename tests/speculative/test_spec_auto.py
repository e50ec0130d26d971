"""`spec="auto"`: the policy verifies drafts only where they are measured to pay, declines (plain steps in the
same request) where they do not, comes back when the drafts start matching, re-probes with backoff; on the real
model its output is the plain output and its decisions are in the request's SpecStats."""
from __future__ import annotations

import json

import pytest
import torch

from engine.sampling import SamplingParams
from engine.speculative import speculative_stream
from engine.speculative.auto import AutoConfig, AutoPolicy
from engine.speculative.drafter import Draft
from spec_models import RandomTreeDrafter

torch.set_num_threads(1)
PLAIN_S = 0.010  # a simulated plain step


def chain(tokens: list[int]) -> Draft:
    return Draft(torch.tensor(tokens, dtype=torch.long), torch.arange(-1, len(tokens) - 1, dtype=torch.long))


def run(policy: AutoPolicy, truth: list[int], propose, slope: float, start: int = 0) -> list[int]:
    """Decode `truth` (the target's tokens) under the policy: propose(i) drafts after position i, a pass over k
    drafted tokens costs PLAIN_S * (1 + slope * k). Returns k per step."""
    ks, i = [], start
    while i < len(truth) - 1:
        draft = policy.plan(chain(propose(i)[:len(truth) - 1 - i]), i)  # the request's budget prunes
        k = len(draft.tokens)
        drafted = draft.tokens.tolist()
        accepted = next((j for j in range(k) if drafted[j] != truth[i + j]), k)
        emitted = truth[i:i + accepted + 1]
        policy.observe(PLAIN_S * (1 + slope * k), accepted, emitted)
        ks.append(k)
        i += len(emitted)
    return ks


TRUTH = list(range(1000, 1400))
copying = lambda i: TRUTH[i:i + 8]  # noqa: E731 (a lookup that is always right)
wrong = lambda i: [7, 8, 9, 10]  # noqa: E731 (a lookup that is never right)


def test_verifies_long_drafts_where_they_pay():
    policy = AutoPolicy(8)
    ks = run(policy, TRUTH[:120], copying, slope=0.3)
    assert ks[0] == 0 and ks[1] == 2  # a plain step is timed, then a first probe times a pass
    assert ks[1:-1] == sorted(ks[1:-1]) and ks[-2] == 8  # then more of each (always right) draft, up to all of it
    s = policy.stats
    assert s.spec_steps > s.plain_steps and s.switches[0]["to"] == "spec"


def test_declines_drafts_that_miss_and_never_slows_much():
    policy = AutoPolicy(4)
    ks = run(policy, TRUTH[:200], wrong, slope=0.5)
    assert sum(k > 0 for k in ks) <= 2  # the first probe (and at most one re-probe)
    assert policy.stats.declined >= len(ks) - 2 and policy.accept[0] < 0.1  # learnt from unverified drafts


def test_falls_back_and_comes_back_in_one_request():
    policy = AutoPolicy(8)
    phase = lambda i: copying(i) if i < 60 or i >= 160 else [5, 6, 7, 8]  # noqa: E731 copy, chat, copy
    ks = run(policy, TRUTH[:260], phase, slope=0.4)
    moves = [sw["to"] for sw in policy.stats.switches]
    assert moves[:3] == ["spec", "plain", "spec"], policy.stats.switches
    assert any(k > 0 for k in ks[-10:])  # verifying again in the last copy phase


def test_reprobe_backoff_doubles_while_probes_do_not_pay():
    cfg = AutoConfig(backoff=4)
    policy = AutoPolicy(8, cfg)
    # always-right drafts, but a pass costs 1.5 plain steps per drafted token: never pays at 2 tokens, and would
    # pay at half that cost, so the policy keeps re-timing it with a growing gap
    ks = run(policy, TRUTH[:200], copying, slope=1.5)
    probes = [i for i, k in enumerate(ks) if k > 0]
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    # (the first re-probe waits until unverified drafts have shown that they would be accepted)
    assert len(probes) >= 4 and gaps[1:] == sorted(gaps[1:]) and gaps[-1] >= 2 * gaps[1]
    assert policy.backoff > cfg.backoff


@pytest.fixture(scope="module")
def smol(smollm2_path):
    from engine import Engine

    return Engine.load(str(smollm2_path), device="cpu", max_seq_len=1024)


COPY = "Copy this list exactly, twice: apples, pears, plums, cherries, apples, pears, plums, cherries."


def test_auto_identical_to_plain_with_its_decisions(smol):
    """Through Engine.generate (the row path), on a prompt whose lookups match: plain steps and verified drafts
    in the same request, the same tokens as plain decoding, the decisions in SpecStats.auto."""
    prompt = smol.apply_chat_template([{"role": "user", "content": COPY}])
    plain = smol.generate(prompt, SamplingParams(max_tokens=40))
    auto = smol.generate(prompt, SamplingParams(max_tokens=40, spec="auto"))
    assert auto.token_ids == plain.token_ids and auto.text == plain.text
    d = auto.spec.as_dict()
    a = d["auto"]
    assert d["drafter"] == "auto"
    assert a["plain_steps"] >= 1 and a["spec_steps"] >= 1 and a["plain_steps"] + a["spec_steps"] == d["steps"]
    assert a["plain_step_ms"] > 0 and a["switches"][0]["to"] == "spec"
    json.dumps(d)  # telemetry is plain JSON


def test_auto_declines_a_drafter_that_misses(smol):
    """A drafter whose chains are random: after one probe the policy decodes plain, the output unchanged."""
    prompt = smol.apply_chat_template([{"role": "user", "content": "Write a short paragraph about Paris."}])
    params = SamplingParams(max_tokens=32)
    plain = smol.generate(prompt, params)
    drafter = RandomTreeDrafter(smol.config.vocab_size, width=1, depth=4, seed=3)
    drafter.policy = AutoPolicy(4)  # speculative_steps consults any drafter's `policy`
    chunks = list(speculative_stream(smol, smol._ids(prompt), params, drafter, "auto"))
    r = chunks[-1].result
    assert r.token_ids == plain.token_ids
    a = r.spec.as_dict()["auto"]
    assert len(r.token_ids) == 32 and a["spec_steps"] <= 3  # the first probe, at most a re-probe
    assert a["declined"] >= a["plain_steps"] - 1 >= 32 - 3 * 5 - 1  # the others declined (the last has no room)


def test_auto_sampling_runs(smol):
    prompt = smol.apply_chat_template([{"role": "user", "content": COPY}])
    r = smol.generate(prompt, SamplingParams(max_tokens=24, temperature=0.7, seed=1, spec="auto"))
    assert r.spec is not None and r.spec.auto is not None and len(r.token_ids) >= 1


@pytest.mark.slow  # grammar compilation and two constrained generations
def test_auto_with_json_schema_identical(smol):
    xgr = pytest.importorskip("xgrammar")  # noqa: F841
    from agents.chat.grammar import GrammarFactory

    schema = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}},
              "required": ["items"]}
    factory = GrammarFactory(smol.tokenizer, vocab_size=smol.config.vocab_size, stop_token_ids=sorted(smol.eos_ids))
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    prompt = smol.apply_chat_template([{"role": "user", "content": COPY + " Answer as JSON with a list of items."}])
    plain = smol.generate(prompt, SamplingParams(max_tokens=48, logits_processors=[factory.for_response_format(fmt)]))
    auto = smol.generate(prompt, SamplingParams(max_tokens=48, spec="auto",
                                                logits_processors=[factory.for_response_format(fmt)]))
    assert plain.text.startswith("{") and auto.token_ids == plain.token_ids
    assert auto.spec.auto is not None
