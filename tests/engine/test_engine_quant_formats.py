"""int4 loaders: GPTQ packing (with/without desc_act) and GGUF Q4_0/Q4_1/Q4_K blocks vs `gguf`'s dequantizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from engine import ops
from engine.gguf_file import GGUFTensor
from engine.gguf_weights import convert_tensor
from engine.hf_weights import gptq_to_int4
from engine.model import _dense
from engine.quant import Int4Weight, dequantize


def _pack_nibbles(codes: np.ndarray, axis: int) -> np.ndarray:
    """uint codes -> int32 with 8 codes per word along `axis`, code k at bits 4k (the GPTQ convention)."""
    c = np.moveaxis(codes.astype(np.uint32), axis, -1)
    c = c.reshape(*c.shape[:-1], -1, 8)
    words = np.zeros(c.shape[:-1], np.uint32)
    for k in range(8):
        words |= c[..., k] << (4 * k)
    return np.moveaxis(words.view(np.int32), -1, axis)


@pytest.mark.parametrize("desc_act", [False, True])
@pytest.mark.parametrize("v1", [True, False])
def test_gptq_layer_equals_its_dequantized_weight(desc_act, v1):
    rng = np.random.default_rng(0)
    n_in, n_out, group = 256, 64, 32
    codes = rng.integers(0, 16, (n_in, n_out))  # [in, out], as GPTQ stores them
    zeros = rng.integers(1, 16, (n_in // group, n_out))
    scales = (rng.random((n_in // group, n_out)) * 0.02 + 0.001).astype(np.float16)
    if desc_act:  # act-order: input columns are assigned to groups by a permutation
        g_idx = np.empty(n_in, np.int32)
        g_idx[rng.permutation(n_in)] = np.arange(n_in) // group
    else:
        g_idx = (np.arange(n_in) // group).astype(np.int32)
    w = scales.astype(np.float32)[g_idx, np.arange(n_out)[:, None]] * \
        (codes.T - zeros[g_idx, np.arange(n_out)[:, None]])  # [out, in] fp32 reference weight
    qweight = _pack_nibbles(codes, axis=0)  # [in / 8, out]
    qzeros = _pack_nibbles(zeros - (1 if v1 else 0), axis=1)  # [groups, out / 8]
    int4 = gptq_to_int4(torch.from_numpy(qweight), torch.from_numpy(qzeros), torch.from_numpy(scales),
                        torch.from_numpy(g_idx), group, v1)
    assert (int4.perm is not None) == desc_act
    x = torch.randn(3, n_in)
    ref = x @ torch.from_numpy(w).float().t()
    for got in (ops.linear(x, int4), x @ _dense(int4, torch.float32).t()):
        rel = ((got - ref).norm() / ref.norm()).item()
        assert rel < 1e-5, rel


def _random_blocks(qtype: Q, rows: int, cols: int, rng) -> np.ndarray:
    """Well-formed random raw blocks: random bytes with the f16 scale fields set to small finite values."""
    block, nbytes = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows * cols // block, nbytes), dtype=np.uint8)
    n_f16 = {Q.Q4_0: 1, Q.Q4_1: 2, Q.Q4_K: 2}[qtype]
    scales = (rng.random((len(raw), n_f16)) * 0.01).astype(np.float16)
    raw[:, :2 * n_f16] = scales.view(np.uint8).reshape(len(raw), -1)
    return raw.reshape(-1)


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q4_K])
def test_gguf_int4_blocks_match_gguf_dequantize(qtype):
    rng = np.random.default_rng(1)
    rows, cols = 16, 512
    data = _random_blocks(qtype, rows, cols, rng)
    w = convert_tensor(GGUFTensor("blk.0.ffn_up.weight", (rows, cols), qtype, data), "test.gguf")
    assert isinstance(w, Int4Weight) and w.group_size == 32
    ref = torch.from_numpy(gguf_dequantize(data, qtype).reshape(rows, cols).astype(np.float32))
    assert torch.allclose(dequantize(w), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.F16])
def test_gguf_dense_types(qtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 64)).astype(np.float32)
    data = gguf_quantize(x, qtype).view(np.uint8).reshape(-1)
    w = convert_tensor(GGUFTensor("token_embd.weight", (8, 64), qtype, data), "test.gguf")
    assert torch.allclose(w, torch.from_numpy(gguf_dequantize(data, qtype).reshape(8, 64)), atol=1e-6)
