"""Random decoder-layer weights for the tiny checkpoints that tests write (MiniCPM/Llama tensor names), and
a plain int4 quantizer for the tests that run those models through the int4 paths."""
from __future__ import annotations

import math

import torch

from engine.quant import Int4Weight, pack_int4


def random_layers(g: torch.Generator, layers: int, H: int, I: int, nh: int, nkv: int, D: int,
                  prefix: str = "model.layers.") -> dict[str, torch.Tensor]:
    """Projections scaled by 1/sqrt(fan-in) and norms near 1, named `{prefix}{i}.self_attn.q_proj.weight` etc."""
    shapes = {"self_attn.q_proj": (nh * D, H), "self_attn.k_proj": (nkv * D, H), "self_attn.v_proj": (nkv * D, H),
              "self_attn.o_proj": (H, nh * D), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
    t = {}
    for i in range(layers):
        for n, s in shapes.items():
            t[f"{prefix}{i}.{n}.weight"] = torch.randn(*s, generator=g) / math.sqrt(s[1])
        for n in ("input_layernorm", "post_attention_layernorm"):
            t[f"{prefix}{i}.{n}.weight"] = 1 + 0.1 * torch.randn(H, generator=g)
    return t


def quantize(w: torch.Tensor, group: int = 32) -> Int4Weight:
    """Asymmetric group-wise int4 of a dense [N, K] weight (min/max per group)."""
    n, k = w.shape
    g = w.float().view(n, k // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = (hi - lo).clamp_min(1e-8) / 15
    codes = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8).view(n, k)
    return Int4Weight(pack_int4(codes), scale, lo, group)
