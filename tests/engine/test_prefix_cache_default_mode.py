"""The prefix cache in the default CPU mode (int4 weights on the C kernel), where a hit can change a token's
arithmetic: a full prefill runs a chunk of >= 128 tokens as the dequantized fp32 GEMM, while the short remainder
after a cached prefix runs the int16-activation GEMV (docs/decisions.md, "automatic prefix caching"). The
difference is bounded (relative activation error ~1.5e-5); this checks what a user sees: the same greedy request
sent twice answers the same, across prompt lengths where the remainder's arithmetic differs from the full
prefill's (tokens 192..L of a 200-250-token prompt) and where it does not (past the 256-token grid)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "corpus" / "arxiv_llm_mini.jsonl"


@pytest.fixture(scope="module")
def eng(smollm2_path):
    from engine import Engine

    return Engine.load(str(smollm2_path), device="cpu", max_seq_len=1024, prefix_cache=True)


@pytest.mark.skipif(not CORPUS.exists(), reason="needs ../shared/data (the paper corpus)")
@pytest.mark.parametrize("chars", [700, 900, 1100, 1500])
def test_same_request_twice_same_answer(eng, chars):
    doc = json.loads(CORPUS.open().readline())
    prompt = eng.apply_chat_template([{"role": "user", "content": f"Summarize: {doc['title']}. {doc['abstract']}"[:chars]}])
    first = eng.generate(prompt, max_tokens=24, temperature=0.0)
    second = eng.generate(prompt, max_tokens=24, temperature=0.0)
    assert second.cached_tokens >= 64
    assert second.text == first.text
