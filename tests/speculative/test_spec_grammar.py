"""Speculation + grammar in one request: greedy JSON-schema-constrained output is token-identical with and
without speculation, and drafted tokens the grammar forbids are cut before verification.

agents.chat.grammar.GrammarLogitsProcessor implements engine/speculative/constrain.py's `draft_prefix_ok`
(accept the drafted path on the matcher, then roll back).
"""
from __future__ import annotations

import json

import pytest
import torch

from engine.sampling import SamplingParams
from engine.speculative import PromptLookupDrafter, speculative_stream
from engine.speculative.constrain import DraftChecker
from spec_models import RandomTreeDrafter

xgr = pytest.importorskip("xgrammar")
from agents.chat.grammar import GrammarFactory, GrammarLogitsProcessor  # noqa: E402

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"},
                                           "population": {"type": "integer"}},
          "required": ["city", "country", "population"]}


GrammarDraftProcessor = GrammarLogitsProcessor  # it implements DraftChecker.draft_prefix_ok


@pytest.fixture(scope="module")
def smol(smollm2_path):
    from engine import Engine

    return Engine.load(str(smollm2_path), device="cpu", max_seq_len=1024)


@pytest.mark.slow  # three constrained generations on smollm2 (about 20 s on an idle machine)
def test_json_schema_greedy_identical_with_speculation(smol):
    factory = GrammarFactory(smol.tokenizer, vocab_size=smol.config.vocab_size, stop_token_ids=sorted(smol.eos_ids))
    compiled = factory._compiled("json_schema", json.dumps(SCHEMA))

    def params():
        return SamplingParams(max_tokens=40, logits_processors=[GrammarDraftProcessor(compiled, factory.vocab_size)])

    assert isinstance(params().logits_processors[0], DraftChecker)
    prompt = smol.apply_chat_template([{"role": "user", "content":
                                        "Give the city, country and population of Paris as JSON."}])
    ids = smol._ids(prompt)
    plain = smol.generate(prompt, params())
    assert plain.text.startswith("{")  # the constraint held (40 tokens may end mid-object)
    runs = {"lookup": PromptLookupDrafter(),
            "tree": RandomTreeDrafter(smol.config.vocab_size, width=3, depth=4, seed=0, oracle=plain.token_ids)}
    for name, drafter in runs.items():
        res = list(speculative_stream(smol, ids, params(), drafter))[-1].result
        assert res.token_ids == plain.token_ids, name
    assert res.spec.filtered > 0 and res.spec.accepted > 0  # random siblings were cut, the true path kept


def test_filter_draft_keeps_allowed_subtree():
    from engine.speculative.constrain import filter_draft
    from engine.speculative.drafter import Draft

    class OddOnly:  # allows odd ids only
        def draft_prefix_ok(self, generated, tokens):
            return next((i for i, t in enumerate(tokens) if t % 2 == 0), len(tokens))

    d = Draft(torch.tensor([1, 2, 3, 5, 7]), torch.tensor([-1, -1, 0, 1, 2]))
    out = filter_draft(d, [OddOnly()], [])
    assert out.tokens.tolist() == [1, 3, 7] and out.parents.tolist() == [-1, 0, 1]
