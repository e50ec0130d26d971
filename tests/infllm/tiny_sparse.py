"""A tiny random MiniCPM4-shaped model with a scaled-down sparse_config, run through the real Runner."""
from __future__ import annotations

import math

import torch

from engine.cache import KVCache
from engine.config import ModelConfig
from engine.model import Transformer
from engine.rope import rope_table
from engine.runner import Runner

# 16-token blocks, windows of 8 / stride 4, 2 local blocks, top-6 blocks, sparse from 64 tokens on
SPARSE = {"kernel_size": 8, "kernel_stride": 4, "init_blocks": 1, "block_size": 16, "window_size": 32, "topk": 6,
          "use_nope": False, "dense_len": 64}


def tiny_runner(device: str = "cpu", dtype=torch.float32, sparse: dict | None = None, max_seq_len: int = 256,
                seed: int = 0) -> Runner:
    g = torch.Generator().manual_seed(seed)
    H, I, L, V, nh, nkv = 128, 256, 2, 320, 8, 2
    D = H // nh
    raw = {"architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv,
           "vocab_size": V, "max_position_embeddings": max_seq_len, "rms_norm_eps": 1e-6, "scale_emb": 12,
           "scale_depth": 1.4, "dim_model_base": 32, "tie_word_embeddings": False, "bos_token_id": 1,
           "eos_token_id": [2, 3], "sparse_config": dict(SPARSE, **(sparse or {}))}
    cfg = ModelConfig.from_hf(raw)
    t = {"model.embed_tokens.weight": torch.randn(V, H, generator=g) * 0.1,
         "model.norm.weight": 1 + 0.1 * torch.randn(H, generator=g),
         "lm_head.weight": torch.randn(V, H, generator=g) / math.sqrt(H)}
    shapes = {"self_attn.q_proj": (nh * D, H), "self_attn.k_proj": (nkv * D, H), "self_attn.v_proj": (nkv * D, H),
              "self_attn.o_proj": (H, nh * D), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
    for i in range(L):
        for n, s in shapes.items():
            # larger q/k weights: peaked attention, so which blocks are selected changes the output
            w = 3.0 if n in ("self_attn.q_proj", "self_attn.k_proj") else 1.0
            t[f"model.layers.{i}.{n}.weight"] = torch.randn(*s, generator=g) * w / math.sqrt(s[1])
        for n in ("input_layernorm", "post_attention_layernorm"):
            t[f"model.layers.{i}.{n}.weight"] = 1 + 0.1 * torch.randn(H, generator=g)
    dev = torch.device(device)
    model = Transformer(cfg, t, "tiny").to(dev, dtype, cache_dense=False)
    cos, sin = rope_table(cfg, max_seq_len)
    runner = Runner(model, KVCache(cfg, 1, max_seq_len, dev, dtype), cos.to(dev, dtype), sin.to(dev, dtype))
    runner.use_graphs = False
    return runner


def greedy(runner: Runner, prompt: list[int], n: int) -> tuple[list[int], torch.Tensor]:
    """Greedy ids after the prompt and the stacked logits of every step."""
    with torch.inference_mode():
        logits = runner.prefill(prompt)
        out, all_logits = [], [logits[0].float().cpu()]
        for i in range(n):
            tok = int(logits.argmax(-1)[0])
            out.append(tok)
            logits = runner.decode_one(tok, len(prompt) + i)
            all_logits.append(logits[0].float().cpu())
    return out, torch.stack(all_logits)


def teacher_forced(runner: Runner, prompt: list[int], ids: list[int]) -> torch.Tensor:
    """Logits of every step when the given ids are fed (no sampling): [len(ids) + 1, V]."""
    with torch.inference_mode():
        out = [runner.prefill(prompt)[0].float().cpu()]
        for i, tok in enumerate(ids):
            out.append(runner.decode_one(tok, len(prompt) + i)[0].float().cpu())
    return torch.stack(out)
