"""BitCPM4: tiny checkpoints in the published fake-quantized ternary format (bf16 safetensors whose projection
values are t * s, t in {-1, 0, 1}, one s per group of input columns of a row; MiniCPM4 config keys).

The loader keeps those projections as exact int4 codes; the model must give the logits of the same checkpoint
run as plain dense weights, and greedy generation through `Engine` must follow those logits.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from engine import Engine, SamplingParams
from engine.cache import KVCache
from engine.config import ModelConfig
from engine.engine import load_checkpoint
from engine.hf_weights import read_safetensors, ternary_to_int4
from engine.model import StepContext, Transformer
from engine.quant import Int4Weight, dequantize
from engine.rope import rope_table
from engine.runner import Runner

torch.set_num_threads(1)
H, I, L, V, NH, NKV = 64, 128, 2, 96, 4, 2


def ternary(rows: int, cols: int, group: int, g: torch.Generator) -> torch.Tensor:
    """A fake-quantized weight as BitCPM4 stores it: bf16 values t * s, one s per (row, group of columns)."""
    t = torch.randint(-1, 2, (rows, cols), generator=g).float()
    s = (torch.rand(rows, cols // group, generator=g) * 0.05 + 0.01).repeat_interleave(group, dim=1)
    return (t * s).to(torch.bfloat16)


@pytest.mark.parametrize("group, stored", [(32, 32), (64, 64), (128, 128), (256, 128), (None, 128)])
def test_ternary_weight_becomes_exact_int4(group, stored):
    g = torch.Generator().manual_seed(0)
    cols = 512
    w = ternary(48, cols, group or cols, g)  # None: one scale per row (the whole input dimension)
    q = ternary_to_int4(w)
    assert isinstance(q, Int4Weight) and q.group_size == stored
    assert q.packed.dtype == torch.uint8 and q.packed.shape == (48, cols // 2)  # 4 bits per weight, 1/4 of bf16
    assert torch.equal(dequantize(q), w.float())


def test_non_ternary_weights_stay_dense():
    g = torch.Generator().manual_seed(1)
    assert ternary_to_int4(torch.randn(16, 64, generator=g).to(torch.bfloat16)) is None
    w = ternary(16, 64, 32, g)
    w[5, 3] = w[5, 3] * 1.5 + 0.01  # one value off the ternary grid in a later row: the whole check must see it
    assert ternary_to_int4(w) is None


def write_bitcpm(path, group: int) -> None:
    """A tiny BitCPM4-0.5B-shaped checkpoint: MiniCPM4 config keys (no tie_word_embeddings key = tied),
    MiniCPM4 tensor names, bf16 safetensors, ternary projections, dense embedding and norms."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(group)
    D = H // NH
    cfg = {"architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV,
           "vocab_size": V, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "scale_emb": 12,
           "scale_depth": 1.4, "dim_model_base": 16, "hidden_act": "silu", "torch_dtype": "bfloat16",
           "bos_token_id": 1, "eos_token_id": [2, 3]}
    t = {"model.embed_tokens.weight": (torch.randn(V, H, generator=g) * 0.1).to(torch.bfloat16),
         "model.norm.weight": (1 + 0.1 * torch.randn(H, generator=g)).to(torch.bfloat16)}
    shapes = {"self_attn.q_proj": (NH * D, H), "self_attn.k_proj": (NKV * D, H), "self_attn.v_proj": (NKV * D, H),
              "self_attn.o_proj": (H, NH * D), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H),
              "mlp.down_proj": (H, I)}
    for i in range(L):
        for n, (rows, cols) in shapes.items():
            w = ternary(rows, cols, min(group, cols), g).float() * (3 / math.sqrt(cols))
            t[f"model.layers.{i}.{n}.weight"] = w.to(torch.bfloat16)
        for n in ("input_layernorm", "post_attention_layernorm"):
            t[f"model.layers.{i}.{n}.weight"] = (1 + 0.1 * torch.randn(H, generator=g)).to(torch.bfloat16)
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(t, str(path / "model.safetensors"))


def _runner(cfg: ModelConfig, tensors: dict, cpu_int4: bool = False) -> Runner:
    model = Transformer(cfg, tensors, "test").to(torch.device("cpu"), torch.float32, cache_dense=True,
                                                  cpu_int4=cpu_int4)
    cos, sin = rope_table(cfg, 64)
    return Runner(model, KVCache(cfg, 1, 64, torch.device("cpu"), torch.float32), cos, sin)


def _all_logits(runner: Runner, ids: list[int]) -> torch.Tensor:
    T = len(ids)
    ctx = StepContext(start=0, kv_len=T, causal=True, cos=runner.cos[None, :T], sin=runner.sin[None, :T])
    with torch.inference_mode():
        return runner.model(torch.tensor([ids]), ctx, runner.cache, last_only=False)[0]


@pytest.mark.parametrize("group", [32, 64, 128])
def test_bitcpm_checkpoint_loads_compact_and_matches_dense(tmp_path, group):
    write_bitcpm(tmp_path, group)
    cfg, tensors = load_checkpoint(tmp_path)
    projections = [k for k in tensors if k.endswith("_proj.weight")]
    assert len(projections) == 7 * L and all(isinstance(tensors[k], Int4Weight) for k in projections)
    assert isinstance(tensors["model.embed_tokens.weight"], torch.Tensor) and cfg.tie_word_embeddings
    dense = read_safetensors(tmp_path)  # the dequantized-equivalent reference: the bf16 values as they are
    ids = torch.randint(0, V, (20,), generator=torch.Generator().manual_seed(2)).tolist()
    ref = _all_logits(_runner(cfg, dense), ids)
    got = _all_logits(_runner(cfg, tensors), ids)
    assert (got - ref).abs().max().item() < 1e-4
    # the default CPU mode runs these layers on torch's int4 kernel (bf16 activations): close, same argmax
    cfg, tensors = load_checkpoint(tmp_path)
    fast = _all_logits(_runner(cfg, tensors, cpu_int4=True), ids)
    assert ((fast - ref).norm() / ref.norm()).item() < 2e-2
    assert (fast.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.9


def _write_tokenizer(path) -> None:
    """A word-level tokenizer over V tokens, enough for Engine.load to find one in the folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_end|>": 3} | {f"w{i}": i for i in range(4, V)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(path))


def test_bitcpm_greedy_generation_follows_dense_logits(tmp_path):
    write_bitcpm(tmp_path, 64)
    _write_tokenizer(tmp_path)
    eng = Engine.load(str(tmp_path), device="cpu", dtype=torch.float32, max_seq_len=64)
    assert all(isinstance(lin.weight, Int4Weight) for b in eng.model.blocks for lin in b.linears())
    prompt = [1, 17, 42, 5, 63, 9]
    no_eos = lambda _ids, logits: logits.index_fill_(0, torch.tensor([2, 3]), float("-inf"))  # noqa: E731
    out = eng.generate(prompt, SamplingParams(max_tokens=12, temperature=0.0, logits_processors=[no_eos]))
    assert out.decode_tokens == 12
    cfg = ModelConfig.from_hf_dir(tmp_path)
    runner, ids = _runner(cfg, read_safetensors(tmp_path)), list(prompt)
    for _ in range(12):  # greedy on the dense reference, recomputing the whole sequence each step
        logits = _all_logits(runner, ids)[-1].clone()
        logits[[2, 3]] = float("-inf")
        ids.append(int(logits.argmax()))
    assert out.token_ids == ids[len(prompt):]


# ---- GGUF: llama.cpp's `minicpm` architecture with ternary TQ1_0 / TQ2_0 projections ------------------------
def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """What llama.cpp's converter does to q/k rows (MiniCPMModel.modify_tensors -> LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


def test_bitcpm_gguf_minicpm_arch_with_ternary_blocks(tmp_path):
    import numpy as np
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFWriter, RopeScalingType
    from gguf.quants import quantize

    g = torch.Generator().manual_seed(3)
    h, inter, layers, heads, kv, vocab = 256, 512, 2, 4, 2, 64  # TQ blocks are 256 wide
    d = h // heads
    hf_cfg = {"architectures": ["MiniCPMForCausalLM"], "hidden_size": h, "intermediate_size": inter,
              "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
              "vocab_size": vocab, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "scale_emb": 12,
              "scale_depth": 1.4, "dim_model_base": 64,
              "rope_scaling": {"rope_type": "longrope", "original_max_position_embeddings": 128,
                               "short_factor": (1 + torch.rand(d // 2, generator=g)).tolist(),
                               "long_factor": (1 + 4 * torch.rand(d // 2, generator=g)).tolist()}}
    dense = {"model.embed_tokens.weight": torch.randn(vocab, h, generator=g) * 0.1,
             "model.norm.weight": 1 + 0.1 * torch.randn(h, generator=g)}
    w = GGUFWriter(str(tmp_path / "bitcpm.gguf"), "minicpm")
    for key, val in (("block_count", layers), ("context_length", 128), ("embedding_length", h),
                     ("feed_forward_length", inter), ("attention.head_count", heads),
                     ("attention.head_count_kv", kv)):
        w.add_uint32(f"minicpm.{key}", val)
    w.add_float32("minicpm.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_embedding_scale(12.0)
    w.add_residual_scale(1.4 / math.sqrt(layers))
    w.add_logit_scale(h / 64)
    w.add_rope_scaling_type(RopeScalingType.LONGROPE)
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(vocab)])

    def add(name: str, t: torch.Tensor, qtype=Q.F32) -> None:
        x = t.float().numpy()
        w.add_tensor(name, x if qtype == Q.F32 else quantize(x, qtype), raw_dtype=qtype)

    add("token_embd.weight", dense["model.embed_tokens.weight"])
    add("output_norm.weight", dense["model.norm.weight"])
    for kind in ("long", "short"):
        add(f"rope_factors_{kind}.weight", torch.tensor(hf_cfg["rope_scaling"][f"{kind}_factor"]))
    gguf_names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                  "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                  "mlp.down_proj": "ffn_down"}
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv * d, h), "self_attn.v_proj": (kv * d, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h),
              "mlp.down_proj": (h, inter)}
    for i in range(layers):
        for j, (n, (rows, cols)) in enumerate(shapes.items()):
            t = torch.randint(-1, 2, (rows, cols), generator=g).float()
            # one scale per 256-block, a multiple of 2^-12 below 2^-4 so f16 (TQ's d) holds it exactly
            s = torch.randint(16, 256, (rows, cols // 256), generator=g).float() / 4096
            wt = t * s.repeat_interleave(256, dim=1) * (16 / math.sqrt(cols))
            dense[f"model.layers.{i}.{n}.weight"] = wt
            if n == "self_attn.q_proj":
                wt = _llama_cpp_permute(wt, heads)
            elif n == "self_attn.k_proj":
                wt = _llama_cpp_permute(wt, kv)
            add(f"blk.{i}.{gguf_names[n]}.weight", wt, Q.TQ2_0 if j % 2 else Q.TQ1_0)
        for n, gn in (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")):
            dense[f"model.layers.{i}.{n}.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
            add(f"blk.{i}.{gn}.weight", dense[f"model.layers.{i}.{n}.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    cfg, tensors = load_checkpoint(tmp_path / "bitcpm.gguf")
    ref_cfg = ModelConfig.from_hf(hf_cfg)
    assert cfg.family == "minicpm" and cfg.tie_word_embeddings
    assert (cfg.scale_emb, cfg.residual_scale, cfg.logit_scale) == pytest.approx(
        (ref_cfg.scale_emb, ref_cfg.residual_scale, ref_cfg.logit_scale))
    assert cfg.rope_scaling["short_factor"] == pytest.approx(hf_cfg["rope_scaling"]["short_factor"])
    assert all(isinstance(tensors[k], Int4Weight) for k in tensors if k.endswith("_proj.weight"))
    ids = torch.randint(0, vocab, (16,), generator=g).tolist()
    ref = _all_logits(_runner(ref_cfg, dense), ids)
    got = _all_logits(_runner(cfg, tensors), ids)
    assert (got - ref).abs().max().item() < 1e-4
