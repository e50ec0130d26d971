"""Prompt lookup's incremental n-gram index proposes exactly what a scan of the whole context finds."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.speculative.prompt_lookup import PromptLookupDrafter

tokens = st.lists(st.integers(0, 4), min_size=1, max_size=30)  # a small vocabulary: many repeats


@settings(max_examples=200, deadline=None)
@given(prompt=tokens, root=st.integers(0, 4), commits=st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=4),
                                                               max_size=15),
       num=st.integers(1, 8), ngrams=st.sampled_from([(1, 2), (2, 3), (1, 4), (3, 3)]))
def test_index_matches_scan(prompt, root, commits, num, ngrams):
    d = PromptLookupDrafter(num_tokens=num, min_ngram=ngrams[0], max_ngram=ngrams[1])
    d.start(prompt, None, root)
    for step in commits + [[]]:
        ref = d.lookup(d.ids)
        got = d.propose().tokens.tolist()
        assert got == ([] if ref is None else ref.tolist())
        if step:
            d.commit(step, None)
