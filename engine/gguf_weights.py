"""GGUF tensors -> the engine's canonical tensors (HF names; int4 as `Int4Weight`, the rest as float).

Block layouts (ggml `ggml-quants.c`, `gguf.quants`), one block per row segment:
    Q4_0  [d:f16][qs:16B]            w = (q - 8) * d          q[j] = qs[j] & 15, q[j+16] = qs[j] >> 4
    Q4_1  [d:f16][m:f16][qs:16B]     w = q * d + m
    Q4_K  256 = 8 x 32 sub-blocks: [d:f16][dmin:f16][scales:12B 6-bit sc/m pairs][qs:128B]
          w = d*sc[j] * q - dmin*m[j]; each 32-byte run of qs holds sub-block 2c in low nibbles, 2c+1 in high
    TQ1_0 / TQ2_0  ternary, 256 per block, w = t * d (t in {-1, 0, 1}; BitCPM4-CANN GGUFs): decoded with
          `gguf.quants.dequantize`, then kept as exact int4 codes (engine.hf_weights.ternary_to_int4)
Other types (F16, BF16, Q8_0, Q5_*, Q6_K, ...) are dequantized once at load with `gguf.quants.dequantize`.
llama.cpp's converter permutes the rows of Llama q/k weights for its interleaved rotary; we undo that so one
(NeoX, rotate-half) rotary serves every format.
"""
from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize

from engine.config import ModelConfig
from engine.errors import EngineError
from engine.gguf_file import GGUFError, GGUFFile, GGUFTensor
from engine.hf_weights import ternary_to_int4
from engine.quant import Int4Weight, pack_int4

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
_DENSE_OK = {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q5_0, Q.Q5_1, Q.Q6_K, Q.Q5_K, Q.Q8_K, Q.Q2_K, Q.Q3_K}
_TERNARY = {Q.TQ1_0, Q.TQ2_0}


def hf_name(gguf_name: str) -> str | None:
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    return None  # e.g. rope_freqs: not a weight the model needs


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    return blocks[:, at:at + 2].copy().view(np.float16).astype(np.float32)[:, 0]


def _repack_q4_32(qs: np.ndarray) -> np.ndarray:
    """ggml's [nblocks, 16] bytes (element j in qs[j] low nibble, j+16 in qs[j] high nibble) -> our packing
    (elements 2k, 2k+1 in byte k), byte-wise without materialising the codes (load time)."""
    lo, hi = qs[:, 0::2], qs[:, 1::2]  # [n, 8] each
    return np.concatenate([(lo & 0xF) | (hi << 4), (lo >> 4) | (hi & 0xF0)], axis=1)


def _q4_legacy(t: GGUFTensor, with_min: bool) -> Int4Weight:
    rows, cols = t.shape
    bsize = 20 if with_min else 18
    blocks = t.data.reshape(-1, bsize)
    d = _f16(blocks, 0)
    m = _f16(blocks, 2) if with_min else -8.0 * d
    packed = _repack_q4_32(blocks[:, bsize - 16:])
    return Int4Weight(torch.from_numpy(packed.reshape(rows, cols // 2)), torch.from_numpy(d.reshape(rows, -1)),
                      torch.from_numpy(np.ascontiguousarray(m.reshape(rows, -1))), 32)


def _q4_k(t: GGUFTensor) -> Int4Weight:
    rows, cols = t.shape
    blocks = t.data.reshape(-1, 144)
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    s = blocks[:, 4:16].astype(np.uint8)
    sc = np.empty((len(blocks), 8), np.uint8)
    mn = np.empty((len(blocks), 8), np.uint8)
    sc[:, :4], mn[:, :4] = s[:, 0:4] & 63, s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    qs = blocks[:, 16:].reshape(-1, 4, 32)  # 4 runs of 32 bytes = sub-blocks (2c, 2c+1)
    codes = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 256)
    scales = d[:, None] * sc.astype(np.float32)
    mins = -dmin[:, None] * mn.astype(np.float32)
    return _int4(codes.reshape(rows, cols), scales.reshape(rows, -1), mins.reshape(rows, -1), 32)


def _int4(codes: np.ndarray, scales: np.ndarray, mins: np.ndarray, group: int) -> Int4Weight:
    return Int4Weight(pack_int4(torch.from_numpy(codes)), torch.from_numpy(np.ascontiguousarray(scales)),
                      torch.from_numpy(np.ascontiguousarray(mins)), group)


def convert_tensor(t: GGUFTensor, path) -> torch.Tensor | Int4Weight:
    """One GGUF tensor as a float tensor (dequantized here) or an `Int4Weight` (kept int4)."""
    if t.qtype in (Q.Q4_0, Q.Q4_1) and len(t.shape) == 2:
        return _q4_legacy(t, with_min=t.qtype == Q.Q4_1)
    if t.qtype == Q.Q4_K and len(t.shape) == 2:
        return _q4_k(t)
    if t.qtype == Q.F32:
        return torch.from_numpy(t.data.view(np.float32).reshape(t.shape).copy())
    if t.qtype == Q.F16:
        return torch.from_numpy(t.data.view(np.float16).reshape(t.shape).astype(np.float32))
    if t.qtype in _DENSE_OK or t.qtype in _TERNARY:
        w = torch.from_numpy(np.ascontiguousarray(gguf_dequantize(t.data, t.qtype)).reshape(t.shape))
        if t.qtype in _TERNARY and len(t.shape) == 2:
            return ternary_to_int4(w) or w  # exact by construction; dense only if a block were malformed
        return w
    raise GGUFError(f"{path}: tensor {t.name!r} uses quant type {t.qtype.name}, which the engine does not load "
                    f"(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, TQ1_0, TQ2_0)")


def _unpermute_rows(w: torch.Tensor | Int4Weight, n_head: int) -> torch.Tensor | Int4Weight:
    """Undo llama.cpp's q/k row permutation (interleaved pairs -> two halves per head)."""
    rows = w.shape[0]
    hd = rows // n_head
    order = torch.arange(rows).view(n_head, hd // 2, 2).transpose(1, 2).reshape(rows)
    if isinstance(w, Int4Weight):
        return Int4Weight(w.packed[order], w.scales[order], w.mins[order], w.group_size, w.perm)
    return w[order]


def expected_shape(key: str, cfg: ModelConfig) -> tuple[int, ...] | None:
    """The torch shape the config implies for a canonical tensor name (None: not one whose shape we know)."""
    H, q, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    if key in ("model.embed_tokens.weight", "lm_head.weight"):
        return cfg.vocab_size, H
    if key.endswith(("layernorm.weight", "model.norm.weight")):
        return (H,)
    tail = key.rsplit("layers.", 1)[-1].split(".", 1)[-1]
    return {"self_attn.q_proj.weight": (q, H), "self_attn.k_proj.weight": (kv, H),
            "self_attn.v_proj.weight": (kv, H), "self_attn.o_proj.weight": (H, q),
            "self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,),
            "self_attn.q_norm.weight": (cfg.head_dim,), "self_attn.k_norm.weight": (cfg.head_dim,),
            "mlp.gate_proj.weight": (cfg.intermediate_size, H), "mlp.up_proj.weight": (cfg.intermediate_size, H),
            "mlp.down_proj.weight": (H, cfg.intermediate_size)}.get(tail)


def load_gguf(path) -> tuple[ModelConfig, dict, GGUFFile]:
    """Read a GGUF into (config, {hf_name: tensor | Int4Weight}, the opened file for the tokenizer). Every
    tensor's shape is checked against the config before any is converted (nothing is allocated for a file
    that cannot load)."""
    f = GGUFFile(path)
    cfg = ModelConfig.from_gguf(f.metadata, set(f.tensors), str(path))
    for name, t in f.tensors.items():
        key = hf_name(name)
        want = expected_shape(key, cfg) if key else None
        if want is not None and t.shape != want:
            raise GGUFError(f"{path}: tensor {name!r} has shape {t.shape}, expected {want} from the metadata")
    tensors: dict = {}
    for name, t in f.tensors.items():
        key = hf_name(name)
        if key is None:
            continue
        w = convert_tensor(t, path)
        if cfg.family in ("llama", "minicpm") and key.endswith(("q_proj.weight", "k_proj.weight")):
            w = _unpermute_rows(w, cfg.num_heads if "q_proj" in key else cfg.num_kv_heads)
        tensors[key] = w
    if cfg.rope_scaling is not None and cfg.rope_scaling.get("rope_type") == "longrope":
        _longrope_factors(cfg, f, path)
    return cfg, tensors, f


def _longrope_factors(cfg: ModelConfig, f: GGUFFile, path) -> None:
    """LongRoPE's factor lists travel as tensors (`rope_factors_long/short.weight`, F32 [head_dim / 2])."""
    for kind in ("long", "short"):
        t = f.tensors.get(f"rope_factors_{kind}.weight")
        if t is None:
            raise EngineError(f"{path}: rope scaling is longrope but the file has no rope_factors_{kind}.weight")
        cfg.rope_scaling[f"{kind}_factor"] = convert_tensor(t, path).reshape(-1).tolist()
