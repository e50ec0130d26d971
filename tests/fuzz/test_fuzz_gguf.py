"""Fuzzing the GGUF header parser and hyperparameter check: whatever the bytes, GGUFFile + ModelConfig.from_gguf
either succeed or raise EngineError (never IndexError, struct.error, MemoryError, OverflowError, ...), in bounded
time. Inputs: raw bytes, structurally valid files with random values, and byte mutations of a valid file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from fuzz_targets import fuzz_settings, gguf
from hypothesis import example, given
from hypothesis import strategies as st

from tests.gguf_bytes import ARR, BOOL, F32, I32, STR, U32, U64, gguf_bytes, tiny_llama_kv

CORPUS = Path(__file__).parent / "corpus" / "gguf.json"
VALID = gguf_bytes(tiny_llama_kv())
KEYS = list(tiny_llama_kv()) + ["general.alignment", "llama.rope.freq_base", "llama.vocab_size",
                                "llama.attention.key_length", "llama.rope.scaling.type", "tokenizer.ggml.eos_token_id"]

scalars = st.one_of(
    st.tuples(st.just(U32), st.integers(0, 2 ** 32 - 1)), st.tuples(st.just(I32), st.integers(-2 ** 31, 2 ** 31 - 1)),
    st.tuples(st.just(U64), st.integers(0, 2 ** 64 - 1)), st.tuples(st.just(F32), st.floats(width=32)),
    st.tuples(st.just(BOOL), st.booleans()), st.tuples(st.just(STR), st.text(max_size=20)))
values = st.one_of(scalars, st.tuples(st.just(ARR), st.one_of(
    st.tuples(st.just(U32), st.lists(st.integers(0, 2 ** 32 - 1), max_size=8)),
    st.tuples(st.just(STR), st.lists(st.text(max_size=5), max_size=8)))))
dims = st.lists(st.integers(0, 2 ** 64 - 1) | st.integers(0, 64), min_size=0, max_size=6)
tensors = st.lists(st.tuples(st.sampled_from(["token_embd.weight", "output.weight", "blk.0.attn_q.weight"]),
                             dims, st.integers(0, 40), st.integers(0, 2 ** 64 - 1) | st.integers(0, 64)),
                   max_size=3)


@fuzz_settings(300)
@given(st.binary(max_size=512))
@example(b"GGUF")
@example(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
def test_any_bytes(raw):
    gguf(raw)


@fuzz_settings(300)
@given(st.binary(max_size=256))
def test_bytes_after_a_valid_preamble(tail):
    gguf(b"GGUF\x03\x00\x00\x00" + tail)


@fuzz_settings(300)
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6), tensors)
def test_valid_layout_random_values(changes, table):
    kv = tiny_llama_kv()
    kv.update(changes)
    gguf(gguf_bytes(kv, table) if table else gguf_bytes(kv))


@fuzz_settings(300)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_mutations_of_a_valid_file(edits):
    raw = bytearray(VALID)
    for at, byte in edits:
        raw[at] = byte
    gguf(bytes(raw))


@pytest.mark.parametrize("case", json.loads(CORPUS.read_text()), ids=lambda c: c["why"][:40])
def test_regression_corpus(case):
    gguf(bytes.fromhex(case["hex"]))


TENSOR_NAMES = ["token_embd.weight", "output_norm.weight", "output.weight", "blk.0.attn_q.weight",
                "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.ffn_up.weight",
                "blk.0.ffn_gate.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight",
                "rope_factors_long.weight", "blk.5.attn_q.weight"]
QTYPES = [0, 1, 2, 3, 8, 12, 30]  # F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, BF16: the loader's own paths


@fuzz_settings(150)
@given(st.lists(st.tuples(st.sampled_from(TENSOR_NAMES), st.sampled_from(QTYPES), st.sampled_from([1, 2]),
                          st.sampled_from([1, 2, 16, 32]), st.booleans()), min_size=1, max_size=14,
                unique_by=lambda t: t[0]))
def test_tensor_tables_through_the_loader(entries):
    """Whole loads (GGUF -> converted tensors -> Transformer) of files whose tensors have any of the loader's
    types and shapes that may or may not fit the metadata: loaded, or EngineError (was RuntimeError in the
    q/k row un-permutation for a q weight with fewer rows than heads)."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    from engine.engine import load_checkpoint
    from engine.errors import EngineError
    from engine.model import Transformer

    table, data = [], b""
    for name, qtype, blocks, rows, two_dims in entries:
        block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        dims = [block * blocks, rows] if two_dims else [block * blocks]
        size = int(np.prod(dims)) // block * nbytes
        table.append((name, dims, qtype, len(data)))
        data += bytes(size) + bytes(-size % 32)
    path = Path(tempfile.gettempdir()) / f"cpm-fuzz-load-{os.getpid()}.gguf"
    path.write_bytes(gguf_bytes(tiny_llama_kv(), table, data))
    try:
        cfg, tensors = load_checkpoint(path)
        Transformer(cfg, tensors, str(path))
    except EngineError:
        pass
