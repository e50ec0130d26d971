"""The engine itself (Transformer + KVCache + Runner, CUDA-graph decode) with random weights at a MiniCPM4
shape, for `cpm bench engine`: what is timed is the code that serves real checkpoints, not a copy of it."""
from __future__ import annotations

import torch

from bench.peers.shapes import Shape
from engine.cache import KVCache
from engine.config import ModelConfig
from engine.model import Transformer
from engine.quant import Int4Weight
from engine.rope import rope_table
from engine.runner import Runner


def minicpm_config(s: Shape, max_len: int) -> ModelConfig:
    """MiniCPM4's family and muP knobs (shared/reference/minicpm4_formats.md) at shape `s`; plain rotary."""
    return ModelConfig(family="minicpm", vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.inter,
                       num_layers=s.layers, num_heads=s.heads, num_kv_heads=s.kv_heads, head_dim=s.head_dim,
                       rms_norm_eps=s.eps, max_position_embeddings=max_len, tie_word_embeddings=s.tied,
                       scale_emb=12.0, scale_depth=1.4, dim_model_base=256.0)


def _random_int4(n: int, k: int, group: int, dev: torch.device) -> Int4Weight:
    """Random codes (each byte two nibbles), group scales ~ 2-4e-3 and mins centring the codes: weights ~ +-0.02."""
    packed = torch.randint(0, 256, (n, k // 2), device=dev, dtype=torch.uint8)
    scales = torch.rand(n, k // group, device=dev) * 2e-3 + 2e-3
    return Int4Weight(packed, scales, -7.5 * scales, group)


def random_runner(s: Shape, quant: str, max_batch: int, max_len: int, group: int = 128, device: str = "cuda",
                  dtype: torch.dtype = torch.bfloat16) -> Runner:
    """A Runner over a random-weight Transformer of shape `s` (CUDA, bf16 for the bench); projections int4 (group
    `group`, the engine's Int4Weight) or dense."""
    dev, cfg = torch.device(device), minicpm_config(s, max_len)
    H, d = s.hidden, s.head_dim

    def w(n: int, k: int):
        if quant == "int4":
            return _random_int4(n, k, group, dev)
        return torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02

    def norm() -> torch.Tensor:
        return torch.rand(H, device=dev) + 0.5

    t: dict = {"model.embed_tokens.weight": torch.randn(s.vocab, H, device=dev, dtype=torch.bfloat16) * 0.02,
               "model.norm.weight": norm()}
    if not s.tied:
        t["lm_head.weight"] = torch.randn(s.vocab, H, device=dev, dtype=torch.bfloat16) * 0.02
    for i in range(s.layers):
        a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        t.update({a + "q_proj.weight": w(s.heads * d, H), a + "k_proj.weight": w(s.kv_heads * d, H),
                  a + "v_proj.weight": w(s.kv_heads * d, H), a + "o_proj.weight": w(H, s.heads * d),
                  m + "gate_proj.weight": w(s.inter, H), m + "up_proj.weight": w(s.inter, H),
                  m + "down_proj.weight": w(H, s.inter),
                  f"model.layers.{i}.input_layernorm.weight": norm(),
                  f"model.layers.{i}.post_attention_layernorm.weight": norm()})
    model = Transformer(cfg, t, f"random {quant} model").to(dev, dtype, cache_dense=False)
    cos, sin = rope_table(cfg, max_len)
    return Runner(model, KVCache(cfg, max_batch, max_len, dev, dtype), cos.to(dev, dtype), sin.to(dev, dtype))


def weight_bytes(model: Transformer) -> int:
    """Bytes a decode step reads for weights: projections (int4 codes + scales + mins, or dense), norms, the
    head and one embedding row a token."""
    def nbytes(w) -> int:
        if isinstance(w, Int4Weight):
            return sum(x.numel() * x.element_size() for x in (w.packed, w.scales, w.mins))
        return w.numel() * w.element_size()

    total = sum(nbytes(w) for b in model.blocks for lin in b.linears() for w in (lin.parts or [lin.weight]))
    total += sum(nbytes(b.ln1) + nbytes(b.ln2) for b in model.blocks) + nbytes(model.norm)
    return total + nbytes(model.head.weight) + model.embed.shape[1] * model.embed.element_size()
