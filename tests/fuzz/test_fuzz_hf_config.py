"""Fuzzing the HF config reader: any config.json bytes, and any JSON put where a real config has a value, end in
a ModelConfig or an EngineError, in bounded time."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz_targets import fuzz_settings, hf_config, hf_config_dict
from hypothesis import given
from hypothesis import strategies as st

CORPUS = Path(__file__).parent / "corpus" / "hf_config.json"
BASE = {"architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "max_position_embeddings": 128, "tie_word_embeddings": False, "eos_token_id": 2,
        "bos_token_id": 1, "rope_scaling": None, "torch_dtype": "float32", "head_dim": 16,
        "quantization_config": {"bits": 4, "group_size": 128}, "model_type": "llama"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@fuzz_settings(300)
@given(st.dictionaries(st.sampled_from(sorted(BASE) + ["architectures", "rope_parameters", "scale_emb"]),
                       json_values, max_size=5))
def test_any_value_in_any_key(changes):
    hf_config_dict({**BASE, **changes})


@fuzz_settings(200)
@given(json_values)
def test_any_json_document(value):
    hf_config_dict(value)


@fuzz_settings(150)
@given(st.binary(max_size=300))
def test_any_file_bytes(raw):
    hf_config(raw)


@pytest.mark.parametrize("case", json.loads(CORPUS.read_text()), ids=lambda c: c["why"][:40])
def test_regression_corpus(case):
    text = case.get("text") or '{"a": ' + "[" * case["nested"] + "]" * case["nested"] + "}"
    hf_config(text.encode())
