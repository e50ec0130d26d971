"""The Eagle draft head: the CPM.cu, vLLM and our own layouts load to the same head, its layer matches the
engine's own (transformers-checked) decoder block, the residual-scale rule, and heads that do not fit the
target are refused with a clear message. Heads are tiny synthetic ones written by the test in each layout."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from engine.config import ModelConfig
from engine.errors import EngineError
from engine.model import Block, StepContext
from engine.speculative.eagle import EagleHead, config_for_target, head_rows, load_head
from engine.speculative.freq import load_freq
from tests.tiny_weights import random_layers

torch.set_num_threads(1)
BASE = {"architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "scale_emb": 12, "scale_depth": 1.4,
        "dim_model_base": 16}


def base_cfg(**over) -> ModelConfig:
    return ModelConfig.from_hf({**BASE, **over})


def cpmcu_tensors(layers: int = 1, seed: int = 0, fc_bias: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    H, I, D, nh, nkv = 64, 128, 16, 4, 2
    t = {"fc.weight": torch.randn(H, 2 * H, generator=g) / math.sqrt(2 * H),
         "input_norm1.weight": 1 + 0.1 * torch.randn(H, generator=g),
         "input_norm2.weight": 1 + 0.1 * torch.randn(H, generator=g)}
    if fc_bias:
        t["fc.bias"] = 0.1 * torch.randn(H, generator=g)
    t.update(random_layers(g, layers, H, I, nh, nkv, D, prefix="layers."))
    return t


def write(path, tensors: dict, **cfg_over):
    path.mkdir(parents=True, exist_ok=True)
    cfg = {**BASE, "num_hidden_layers": 1, **cfg_over}
    (path / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    return path


def vllm_tensors(t: dict) -> dict:
    out = {("model." + k.replace("layers.", "eagle_layers.")): v for k, v in t.items()}
    out["model.embed_tokens.weight"] = torch.zeros(320, 64)  # vLLM heads carry copies of these; ignored
    out["lm_head.weight"] = torch.zeros(320, 64)
    return out


def run(head: EagleHead, T: int = 7, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    emb, hid = torch.randn(1, T, 64, generator=g), torch.randn(1, T, 64, generator=g)
    from engine.rope import rope_table

    cos, sin = rope_table(base_cfg(), T)
    with torch.no_grad():
        return head(emb, hid, cos[None], sin[None])


def test_cpmcu_and_vllm_layouts_load_to_the_same_head(tmp_path):
    t = cpmcu_tensors(layers=2, fc_bias=True)
    a, la = load_head(write(tmp_path / "cpmcu", t, num_hidden_layers=2, mup_denominator=32), base_cfg())
    b, lb = load_head(write(tmp_path / "vllm", vllm_tensors(t), num_hidden_layers=2, mup_denominator=32), base_cfg())
    assert (la, lb) == ("cpmcu", "vllm")
    assert a.config == b.config and a.config.num_layers == 2 and a.config.fc_bias
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(t) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(run(a), run(b))


def test_our_saved_head_is_the_cpmcu_layout_and_round_trips(tmp_path):
    base = base_cfg()
    head = EagleHead(config_for_target(base))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    head.save(tmp_path / "ours", base, [5, 1, 9], dtype=torch.float32)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ours" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(cpmcu_tensors()) and "fc.weight" in f.keys()
    back, layout = load_head(tmp_path / "ours", base)
    assert layout == "cpmcu" and back.config == head.config
    assert torch.equal(run(back), run(head))
    assert load_freq(tmp_path / "ours" / "freq_3.pt").tolist() == [5, 1, 9]


def test_layer_matches_the_engine_decoder_block():
    """The head's layer is the engine's Llama/MiniCPM block (checked against transformers elsewhere)."""
    cfg = base_cfg()
    head = EagleHead(config_for_target(cfg))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    layer = head.layers[0]
    t = {f"model.layers.0.{k}": v.clone() for k, v in layer.state_dict().items()}

    def take(name, shape):
        w = t.pop(name)
        assert tuple(w.shape) == shape
        return w

    one = ModelConfig(**{**cfg.__dict__, "num_layers": 1})
    block = Block(one, t, 0, take)
    block.rs = layer.rs  # the Eagle residual scale (differs from the 1-layer config's own)
    T = 6
    x = torch.randn(1, T, 64)
    from engine.rope import rope_table

    cos, sin = rope_table(cfg, T)
    kc, vc = torch.zeros(1, 2, T, 16), torch.zeros(1, 2, T, 16)
    ctx = StepContext(start=0, kv_len=T, causal=True, cos=cos[None], sin=sin[None])
    with torch.no_grad():
        ref = block(x, ctx, kc, vc)
        ours = layer(x, cos[None], sin[None], None, 0, None)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert math.isclose(layer.rs, 1.4 / math.sqrt(4 + 1))  # CPM.cu's rule for a new MiniCPM head


@pytest.mark.parametrize("layout,extra,want", [
    ("cpmcu", {}, 1.4 / math.sqrt(4 + 1)),  # CPM.cu: scale_depth / sqrt(base layers + 1)
    ("vllm", {}, 1.4 / math.sqrt(1)),  # vLLM's default: the draft config's own num_hidden_layers
    ("cpmcu", {"mup_denominator": 32}, 1.4 / math.sqrt(32)),  # explicit in the checkpoint: wins
    ("vllm", {"eagle_residual_scale": 0.5}, 0.5),  # our own key wins over everything
])
def test_residual_scale_rule(tmp_path, layout, extra, want):
    t = cpmcu_tensors()
    head, _ = load_head(write(tmp_path / "h", t if layout == "cpmcu" else vllm_tensors(t), **extra), base_cfg())
    assert math.isclose(head.config.residual_scale, want) and math.isclose(head.layers[0].rs, want)


@pytest.mark.parametrize("over,match", [
    ({"hidden_size": 96}, "hidden_size is 96 but the target model's is 64"),
    ({"vocab_size": 73448}, "vocab_size is 73448 but the target model's is 320"),
    ({"scale_emb": 1.0}, "scale_emb"),
])
def test_head_that_does_not_fit_is_refused(tmp_path, over, match):
    path = write(tmp_path / "h", cpmcu_tensors(), **over)
    with pytest.raises(EngineError, match=match):
        load_head(path, base_cfg())


def test_broken_head_folders_are_refused(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        load_head(tmp_path / "missing", base_cfg())
    t = cpmcu_tensors()
    del t["layers.0.mlp.up_proj.weight"]
    with pytest.raises(EngineError, match="missing"):
        load_head(write(tmp_path / "a", t), base_cfg())
    t = {k.replace("fc.", "proj."): v for k, v in cpmcu_tensors().items()}
    with pytest.raises(EngineError, match="not an Eagle draft head"):
        load_head(write(tmp_path / "b", t), base_cfg())
    t = cpmcu_tensors()
    t["fc.weight"] = torch.zeros(64, 64)
    with pytest.raises(EngineError, match="fc.weight"):
        load_head(write(tmp_path / "c", t), base_cfg())


def test_fr_rows_are_the_target_head_rows(tmp_path):
    """FR-Spec's draft head = the target's lm_head rows gathered by the frequency list (dense and int4)."""
    from engine.quant import Int4Weight, dequantize, pack_int4

    class Lin:
        dense = None

    class M:
        device, dtype = torch.device("cpu"), torch.float32
        head = Lin()

    w = torch.randn(320, 64)
    M.head.weight = w
    ids = torch.tensor([7, 0, 319])
    assert torch.equal(head_rows(M, ids), w[ids]) and torch.equal(head_rows(M, None), w)
    codes = torch.randint(0, 16, (320, 64), dtype=torch.uint8)
    q = Int4Weight(pack_int4(codes), torch.rand(320, 2), -torch.rand(320, 2), 32)
    M.head.weight = q
    assert torch.allclose(head_rows(M, ids), dequantize(q)[ids])


def test_qat_head_with_gptq_fc_loads_dequantized(tmp_path):
    """MiniCPM4-8B-Eagle-FRSpec-QAT stores fc (and layers) as GPTQ int4: qweight/qzeros/scales (+ g_idx)."""
    import numpy as np

    rng = np.random.default_rng(0)
    n_in, n_out, group = 128, 64, 32
    codes = rng.integers(0, 16, (n_in, n_out))
    zeros = rng.integers(1, 16, (n_in // group, n_out))
    scales = (rng.random((n_in // group, n_out)) * 0.02 + 0.001).astype(np.float16)
    g_idx = (np.arange(n_in) // group).astype(np.int32)
    w = scales.astype(np.float32)[g_idx, np.arange(n_out)[:, None]] * (codes.T - zeros[g_idx, np.arange(n_out)[:, None]])

    def pack(c, axis):  # 8 codes per int32 along `axis`, code k at bits 4k (GPTQ)
        c = np.moveaxis(c.astype(np.uint32), axis, -1)
        c = c.reshape(*c.shape[:-1], -1, 8)
        words = np.zeros(c.shape[:-1], np.uint32)
        for k in range(8):
            words |= c[..., k] << (4 * k)
        return torch.from_numpy(np.moveaxis(words.view(np.int32), -1, axis).copy())

    t = cpmcu_tensors()
    del t["fc.weight"]
    t.update({"fc.qweight": pack(codes, 0), "fc.qzeros": pack(zeros - 1, 1), "fc.scales": torch.from_numpy(scales),
              "fc.g_idx": torch.from_numpy(g_idx)})
    head, layout = load_head(write(tmp_path / "qat", t, quantization_config={
        "quant_method": "gptq", "bits": 4, "group_size": group}), base_cfg())
    assert layout == "cpmcu"
    assert torch.allclose(head.fc.weight, torch.from_numpy(w).float(), atol=1e-6)
