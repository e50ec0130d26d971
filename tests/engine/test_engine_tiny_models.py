"""Tiny random Llama / Qwen2 / Qwen3 / MiniCPM4 checkpoints: our logits vs transformers' (fp32, CPU).

Prefill logits at every position, then 16 decode steps through the static KV cache, each compared with
transformers' logits at the same position (max abs diff < 1e-4).
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from engine.cache import KVCache
from engine.engine import load_checkpoint
from engine.model import Transformer
from engine.rope import rope_table
from engine.runner import Runner
from tests.tiny_weights import random_layers

torch.set_num_threads(1)
TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)


def ours(path, max_seq_len=128):
    cfg, tensors = load_checkpoint(path)
    model = Transformer(cfg, tensors, str(path)).to(torch.device("cpu"), torch.float32, cache_dense=True)
    cos, sin = rope_table(cfg, max_seq_len)
    return Runner(model, KVCache(cfg, 1, max_seq_len, torch.device("cpu"), torch.float32), cos, sin)


def compare(runner: Runner, ref_logits_fn, n_prompt: int = 12, n_decode: int = 16, seed: int = 0) -> float:
    """Greedy-free check: fixed random ids, so every step's logits are compared at a known input."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, runner.model.cfg.vocab_size, (n_prompt + n_decode,), generator=g).tolist()
    ref = ref_logits_fn(ids)  # [T, V]
    with torch.inference_mode():
        ctx_logits = _prefill_all(runner, ids[:n_prompt])
        worst = (ctx_logits - ref[:n_prompt]).abs().max().item()
        for i in range(n_prompt, n_prompt + n_decode):
            step = runner.decode_one(ids[i], i)[0]
            worst = max(worst, (step - ref[i]).abs().max().item())
    return worst


def _prefill_all(runner: Runner, ids: list[int]) -> torch.Tensor:
    from engine.model import StepContext

    T = len(ids)
    ctx = StepContext(start=0, kv_len=T, causal=True, cos=runner.cos[None, :T], sin=runner.sin[None, :T])
    return runner.model(torch.tensor([ids]), ctx, runner.cache, last_only=False)[0]


def hf_fn(model):
    def run(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].float()
    return run


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_tiny_hf_models_match_transformers(arch, tmp_path):
    import transformers

    torch.manual_seed(0)
    if arch == "llama":
        cfg = transformers.LlamaConfig(**TINY, rope_theta=10000.0, tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = transformers.Qwen2Config(**TINY, rope_theta=1e6, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.Qwen3Config(**TINY, head_dim=32, rope_theta=1e6, tie_word_embeddings=True)
        model = transformers.Qwen3ForCausalLM(cfg)
    with torch.no_grad():  # random norms and biases, so a missed weight cannot hide behind an init of 1/0
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.eval().float().save_pretrained(tmp_path)
    assert compare(ours(tmp_path), hf_fn(model)) < 1e-4


def test_tiny_llama_sharded_bf16_loads(tmp_path):
    """A bf16 checkpoint split over shards (model.safetensors.index.json) loads to the same model."""
    import transformers

    torch.manual_seed(1)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).to(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert compare(ours(tmp_path), hf_fn(model.float())) < 1e-4


# ---- MiniCPM4: exact published layout, checked against a transformed LlamaForCausalLM -----------------------
def write_minicpm(tmp_path, *, longrope: bool, max_pos: int = 256, orig: int = 256, seed: int = 0):
    """A tiny MiniCPM4 checkpoint: MiniCPM4-0.5B's config keys (no tie_word_embeddings key = tied),
    its tensor names, no lm_head tensor. Returns (config dict, tensors)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    H, I, L, V, nh, nkv = 64, 128, 2, 320, 4, 2
    D = H // nh
    cfg = {"architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv,
           "vocab_size": V, "max_position_embeddings": max_pos, "rms_norm_eps": 1e-5, "scale_emb": 12,
           "scale_depth": 1.4, "dim_model_base": 16, "hidden_act": "silu", "torch_dtype": "float32",
           "bos_token_id": 1, "eos_token_id": [2, 3]}
    if longrope:
        cfg["rope_scaling"] = {"rope_type": "longrope",
                               "short_factor": (1 + torch.rand(D // 2, generator=g)).tolist(),
                               "long_factor": (1 + 4 * torch.rand(D // 2, generator=g)).tolist(),
                               "original_max_position_embeddings": orig}
    t = {"model.embed_tokens.weight": torch.randn(V, H, generator=g) * 0.1,
         "model.norm.weight": 1 + 0.1 * torch.randn(H, generator=g)}
    t.update(random_layers(g, L, H, I, nh, nkv, D, prefix="model.layers."))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(t, str(tmp_path / "model.safetensors"))
    return cfg, t


def llama_equivalent(cfg: dict, t: dict):
    """LlamaForCausalLM with MiniCPM's muP folded into weights: scale_emb into the embedding, the residual
    scale into o_proj/down_proj, the logit scale into an untied head."""
    import transformers

    L, H = cfg["num_hidden_layers"], cfg["hidden_size"]
    rs, ls = cfg["scale_depth"] / math.sqrt(L), cfg["dim_model_base"] / H
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    if "rope_scaling" in cfg:
        rope = dict(cfg["rope_scaling"], rope_theta=10000.0)
    lc = transformers.LlamaConfig(vocab_size=cfg["vocab_size"], hidden_size=H,
                                  intermediate_size=cfg["intermediate_size"], num_hidden_layers=L,
                                  num_attention_heads=cfg["num_attention_heads"],
                                  num_key_value_heads=cfg["num_key_value_heads"],
                                  max_position_embeddings=cfg["max_position_embeddings"],
                                  rms_norm_eps=cfg["rms_norm_eps"], tie_word_embeddings=False, rope_parameters=rope)
    model = transformers.LlamaForCausalLM(lc).eval()
    sd = {k: v.clone() for k, v in t.items()}
    sd["lm_head.weight"] = t["model.embed_tokens.weight"] * ls
    sd["model.embed_tokens.weight"] = t["model.embed_tokens.weight"] * cfg["scale_emb"]
    for k in list(sd):
        if k.endswith(("o_proj.weight", "down_proj.weight")):
            sd[k] = sd[k] * rs
    model.load_state_dict(sd, strict=True)
    return model


@pytest.mark.parametrize("longrope", [False, True])
def test_tiny_minicpm4_matches_transformed_llama(longrope, tmp_path):
    cfg, t = write_minicpm(tmp_path, longrope=longrope)
    runner = ours(tmp_path)
    assert runner.model.tied and runner.model.cfg.tie_word_embeddings  # key absent -> MiniCPM default True
    assert compare(runner, hf_fn(llama_equivalent(cfg, t))) < 1e-4


def test_minicpm_longrope_beyond_original_follows_minicpm(tmp_path):
    """max_position_embeddings > original: MiniCPM uses long_factor at every length and multiplies cos/sin by
    sqrt(1 + ln(max/orig) / ln(orig)); transformers' longrope would pick short_factor for short inputs.
    We follow MiniCPM (docs/formats.md); this checks the table against MiniCPM's formula written out here."""
    cfg, _ = write_minicpm(tmp_path, longrope=True, max_pos=1024, orig=256)
    mc, _ = load_checkpoint(tmp_path)
    cos, sin = rope_table(mc, 64)
    D = mc.head_dim
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2).float() / D))
    ext = torch.tensor(cfg["rope_scaling"]["long_factor"], dtype=torch.float32)
    freqs = torch.outer(torch.arange(64).float(), 1.0 / ext) * inv
    emb = torch.cat([freqs, freqs], -1)
    scale = math.sqrt(1 + math.log(1024 / 256) / math.log(256))
    assert torch.allclose(cos, emb.cos() * scale, atol=1e-5) and torch.allclose(sin, emb.sin() * scale, atol=1e-5)


def test_minicpm_config_keys(tmp_path):
    write_minicpm(tmp_path, longrope=True)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["sparse_config"] = {"kernel_size": 32, "kernel_stride": 16, "init_blocks": 1, "block_size": 64,
                            "window_size": 2048, "topk": 64, "use_nope": False, "dense_len": 8192}
    raw["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(raw))
    from engine.config import ModelConfig

    cfg = ModelConfig.from_hf_dir(tmp_path)
    assert cfg.sparse_config["dense_len"] == 8192 and cfg.tie_word_embeddings is False
    assert cfg.residual_scale == pytest.approx(1.4 / math.sqrt(2)) and cfg.logit_scale == pytest.approx(16 / 64)
    assert cfg.eos_token_ids == [2, 3]


@pytest.mark.parametrize("rope", [
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
    {"rope_type": "linear", "factor": 2.0},
])
def test_scaled_rope_matches_transformers(rope, tmp_path):
    import transformers

    torch.manual_seed(2)
    cfg = transformers.LlamaConfig(**TINY, rope_parameters=dict(rope, rope_theta=10000.0))
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path)
    assert compare(ours(tmp_path), hf_fn(model)) < 1e-4
