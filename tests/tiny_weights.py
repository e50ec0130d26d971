"""Random decoder-layer weights for the tiny checkpoints that tests write (MiniCPM/Llama tensor names)."""
from __future__ import annotations

import math

import torch


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
