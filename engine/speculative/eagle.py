"""The Eagle / FR-Spec draft head: fc over (normed embedding, normed target hidden state) + Llama-style layers.

One `torch.nn.Module` serves inference (with its own small static KV cache, written at arbitrary slots so
that a draft tree can sit after the committed prefix) and training (`cpm spec train`: no cache, causal).
Module attribute names are the CPM.cu tensor names, so `state_dict()` *is* the CPM.cu layout; the vLLM
layout is renamed into it at load. The target's embedding and LM head are reused, not owned: FR-Spec's
pruned head is the target's head rows gathered by the frequency list (`TargetHead`). See docs/frspec.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from engine import ops
from engine.config import ModelConfig
from engine.errors import EngineError

CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")


@dataclass
class EagleConfig:
    hidden_size: int
    intermediate_size: int
    num_layers: int  # Eagle decoder layers (config.json's num_hidden_layers)
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float = 1e-6
    residual_scale: float = 1.0  # the Eagle layer's branch multiplier (docs/frspec.md §4)
    use_input_norm: bool = True  # input_norm1/2 before fc (MiniCPM4 heads); plain Eagle-1 has none
    use_attn_norm: bool = True  # layer 0's input_layernorm (CPM.cu's use_attn_norm)
    fc_bias: bool = False
    attention_bias: bool = False


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, c: EagleConfig):
        super().__init__()
        H, D = c.hidden_size, c.head_dim
        self.q_proj = nn.Linear(H, c.num_heads * D, bias=c.attention_bias)
        self.k_proj = nn.Linear(H, c.num_kv_heads * D, bias=c.attention_bias)
        self.v_proj = nn.Linear(H, c.num_kv_heads * D, bias=c.attention_bias)
        self.o_proj = nn.Linear(c.num_heads * D, H, bias=False)
        self.nh, self.nkv, self.hd = c.num_heads, c.num_kv_heads, D
        self.qkv: tuple | None = None  # (weight, bias) of q|k|v concatenated, set by EagleHead.fuse

    def forward(self, x, cos, sin, cache, start: int, mask) -> torch.Tensor:
        """x [B, T, H]; cos/sin [B, T, D]; cache None (training: causal over x) or (kc, vc) [B, KVH, S, D]
        written at slots start..start+T, attended over [0, start+T) with mask bool [B, 1, T, start+T]; or, with
        `start` an int64 tensor of T slots, written there and attended over all S slots with mask [B, 1, T, S]."""
        B, T, _ = x.shape
        if self.qkv is not None:  # inference: one GEMM for the three projections
            q, k, v = F.linear(x, *self.qkv).split([self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], -1)
            q, k, v = q.view(B, T, self.nh, self.hd), k.view(B, T, self.nkv, self.hd), v.view(B, T, self.nkv, self.hd)
        else:
            q = self.q_proj(x).view(B, T, self.nh, self.hd)
            k = self.k_proj(x).view(B, T, self.nkv, self.hd)
            v = self.v_proj(x).view(B, T, self.nkv, self.hd)
        q, k = ops.apply_rotary(q, k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, D]
        if cache is not None:
            kc, vc = cache
            if isinstance(start, torch.Tensor):  # static shapes (CUDA graphs): slots on device, mask over capacity
                kc.index_copy_(2, start, k)
                vc.index_copy_(2, start, v)
                if B == 1 and mask is not None:
                    # the engine's tree-attention kernel (decode kernel for one query): the cache in place, GQA
                    # without repeating K/V per query head, keys past the last written slot never read
                    lengths = (start.max() + 1).to(torch.int32).view(1)
                    o = ops.attention(q, kc, vc, mask, False, self.hd ** -0.5, lengths)
                    return self.o_proj(o.transpose(1, 2).reshape(B, T, self.nh * self.hd))
                k, v = kc, vc
            else:
                kc[:, :, start:start + T] = k
                vc[:, :, start:start + T] = v
                k, v = kc[:, :, :start + T], vc[:, :, :start + T]
        if self.nkv != self.nh:
            k, v = k.repeat_interleave(self.nh // self.nkv, 1), v.repeat_interleave(self.nh // self.nkv, 1)
        o = _attention(q, k, v, mask, causal=mask is None and T > 1)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.nh * self.hd))


# cuDNN's attention (torch's first choice for a masked SDPA on the H200) builds and caches an execution plan per
# shape, and an eager drafter's attention changes shape every step (the committed length grows): the first Eagle
# run over new lengths spent ~110 ms a step drafting against ~7 ms over lengths already seen (frspec.md §8). On
# CUDA the head uses the other SDPA kernels.
_NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool
               ) -> torch.Tensor:
    if not q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    with sdpa_kernel(_NO_CUDNN):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


class MLP(nn.Module):
    def __init__(self, c: EagleConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

        self.gate_up: torch.Tensor | None = None  # gate|up concatenated, set by EagleHead.fuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up is not None:
            g, u = F.linear(x, self.gate_up).chunk(2, dim=-1)
            return self.down_proj(F.silu(g) * u)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c: EagleConfig, attn_norm: bool):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps) if attn_norm else nn.Identity()
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)
        self.rs = c.residual_scale

    def forward(self, x, cos, sin, cache, start, mask):
        a = self.self_attn(self.input_layernorm(x), cos, sin, cache, start, mask)
        x = x + (a if self.rs == 1.0 else a * self.rs)  # no multiply kernel for the Llama case
        m = self.mlp(self.post_attention_layernorm(x))
        return x + (m if self.rs == 1.0 else m * self.rs)


class EagleHead(nn.Module):
    """f = layers(fc(cat(norm1(embed * scale_emb), norm2(hidden)))); f predicts the target's next hidden state."""

    def __init__(self, c: EagleConfig):
        super().__init__()
        self.config = c
        H = c.hidden_size
        self.fc = nn.Linear(2 * H, H, bias=c.fc_bias)
        if c.use_input_norm:
            self.input_norm1 = RMSNorm(H, c.rms_norm_eps)
            self.input_norm2 = RMSNorm(H, c.rms_norm_eps)
        self.layers = nn.ModuleList(Layer(c, attn_norm=c.use_attn_norm or i > 0) for i in range(c.num_layers))

    def forward(self, emb: torch.Tensor, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                caches: list | None = None, start: int = 0, mask: torch.Tensor | None = None) -> torch.Tensor:
        """emb: target embeddings of the next tokens, already * scale_emb [B, T, H]; hidden: the target's
        post-norm states [B, T, H]. caches: per layer (kc, vc) or None. -> features [B, T, H]."""
        if self.config.use_input_norm:
            emb, hidden = self.input_norm1(emb), self.input_norm2(hidden)
        x = self.fc(torch.cat([emb, hidden], dim=-1))
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i], start, mask)
        return x

    @torch.no_grad()
    def fuse(self) -> "EagleHead":
        """Concatenate q|k|v and gate|up weights for inference (fewer, larger GEMMs: the draft step is launch
        bound). Call after the last .to(); training never fuses (the copies would not follow the updates)."""
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp
            ws = [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]
            bs = [a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]
            a.qkv = (torch.cat(ws).contiguous(), None if bs[0] is None else torch.cat(bs).contiguous())
            m.gate_up = torch.cat([m.gate_proj.weight, m.up_proj.weight]).contiguous()
        return self

    # ---- files ------------------------------------------------------------------------------------------
    def save(self, directory: Path, base: ModelConfig, freq_ids: list[int] | None, extra: dict | None = None,
             dtype: torch.dtype = torch.bfloat16) -> Path:
        """Write the CPM.cu layout: config.json + model.safetensors (+ freq_{r}.pt), tensors in `dtype`
        (bf16 as the published heads; the loader upcasts)."""
        from safetensors.torch import save_file

        from engine.speculative.freq import save_freq

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        c = self.config
        cfg = {"architectures": ["MiniCPMForCausalLM" if base.family == "minicpm" else "LlamaForCausalLM"],
               "model_type": "minicpm" if base.family == "minicpm" else "llama",
               "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
               "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
               "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim, "vocab_size": c.vocab_size,
               "rms_norm_eps": c.rms_norm_eps, "rope_theta": base.rope_theta,
               "max_position_embeddings": base.max_position_embeddings, "hidden_act": "silu",
               "torch_dtype": str(dtype).removeprefix("torch."), "eagle_residual_scale": c.residual_scale,
               "eagle_use_input_norm": c.use_input_norm, "eagle_use_attn_norm": c.use_attn_norm}
        if base.rope_scaling:
            cfg["rope_scaling"] = base.rope_scaling
        if base.family == "minicpm":
            cfg.update(scale_emb=base.scale_emb, scale_depth=base.scale_depth, dim_model_base=base.dim_model_base)
        cfg.update(extra or {})
        (directory / "config.json").write_text(json.dumps(cfg, indent=2))
        state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        if freq_ids is not None:
            save_freq(freq_ids, directory / f"freq_{len(freq_ids)}.pt")
        return directory


def config_for_target(base: ModelConfig, layers: int = 1) -> EagleConfig:
    """A new head shaped like one of the target's layers (what `cpm spec train` fits)."""
    rs = base.scale_depth / math.sqrt(base.num_layers + 1) if base.scale_depth is not None else 1.0
    return EagleConfig(base.hidden_size, base.intermediate_size, layers, base.num_heads, base.num_kv_heads,
                       base.head_dim, base.vocab_size, base.rms_norm_eps, rs, attention_bias=base.attention_bias)


def _layout(names: set[str], source: str) -> str:
    if "fc.weight" in names or "fc.qweight" in names:
        return "cpmcu"
    if "model.fc.weight" in names or "model.fc.qweight" in names:
        return "vllm"
    raise EngineError(f"{source}: not an Eagle draft head (expected fc.weight [CPM.cu layout] or model.fc.weight "
                      "[vLLM layout] in its safetensors)")


def _canonical(tensors: dict, layout: str) -> dict:
    """vLLM names -> CPM.cu names; the vLLM copies of embed_tokens / lm_head are dropped (the target's are used)."""
    if layout == "cpmcu":
        return tensors
    out = {}
    for k, v in tensors.items():
        if k in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
            continue
        k = k.removeprefix("model.").replace("eagle_layers.", "layers.")
        out[k] = v
    return out


def _residual_scale(raw: dict, layout: str, base: ModelConfig) -> float:
    """docs/frspec.md §4: our own key, else mup_denominator, else the layout's runtime rule."""
    if "eagle_residual_scale" in raw:
        return float(raw["eagle_residual_scale"])
    depth = raw.get("scale_depth", base.scale_depth)
    if depth is None:
        return 1.0
    if "mup_denominator" in raw:
        return float(depth) / math.sqrt(float(raw["mup_denominator"]))
    if layout == "cpmcu":
        return float(depth) / math.sqrt(base.num_layers + 1)
    return float(depth) / math.sqrt(int(raw.get("num_hidden_layers", 1)))


def _dequantize_gptq(tensors: dict, raw: dict, source: str) -> dict:
    """QAT heads (fc / layers as GPTQ int4): convert with the engine's GPTQ loader, then dequantize (the head is
    one layer; kept dense)."""
    from engine.hf_weights import convert_gptq
    from engine.model import _dense
    from engine.quant import Int4Weight

    convert_gptq(tensors, raw.get("quantization_config") or {}, source)
    return {k: _dense(v, torch.float32) if isinstance(v, Int4Weight) else v for k, v in tensors.items()}


def load_head(directory: Path, base: ModelConfig) -> tuple[EagleHead, str]:
    """Load a head folder (CPM.cu, vLLM or our own layout) for the target described by `base`.
    -> (head in float32 on CPU, layout name). Refuses heads that do not fit the target."""
    from engine.hf_weights import read_safetensors

    directory = Path(directory)
    if not directory.is_dir():
        raise EngineError(f"Eagle head folder {directory} not found (train one with `cpm spec train`)")
    try:
        raw = json.loads((directory / "config.json").read_text())
    except FileNotFoundError:
        raise EngineError(f"{directory}: no config.json (an Eagle head folder holds config.json + "
                          "model.safetensors)") from None
    except json.JSONDecodeError as exc:
        raise EngineError(f"{directory}/config.json: not valid JSON ({exc})") from None
    src = str(directory)
    for key, want in (("hidden_size", base.hidden_size), ("vocab_size", base.vocab_size)):
        got = raw.get(key)
        if got is None:
            raise EngineError(f"{src}: config.json lacks {key!r}")
        if int(got) != want:
            raise EngineError(f"{src}: the draft head's {key} is {got} but the target model's is {want}; "
                              "this head was trained for another model")
    if base.family == "minicpm":
        for key in ("scale_emb", "scale_depth", "dim_model_base"):
            if key in raw and not math.isclose(float(raw[key]), float(getattr(base, key))):
                raise EngineError(f"{src}: the draft head's {key} is {raw[key]} but the target's is "
                                  f"{getattr(base, key)} (they must be equal)")
    tensors = read_safetensors(directory)
    layout = _layout(set(tensors), src)
    if any(n.endswith(".qweight") for n in tensors):
        tensors = _dequantize_gptq(tensors, raw, src)
    tensors = _canonical(tensors, layout)
    heads = int(raw.get("num_attention_heads", base.num_heads))
    c = EagleConfig(
        hidden_size=int(raw["hidden_size"]), intermediate_size=int(raw.get("intermediate_size", base.intermediate_size)),
        num_layers=int(raw.get("num_hidden_layers", 1)), num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=int(raw.get("head_dim") or int(raw["hidden_size"]) // heads), vocab_size=int(raw["vocab_size"]),
        rms_norm_eps=float(raw.get("rms_norm_eps", base.rms_norm_eps)),
        residual_scale=_residual_scale(raw, layout, base),
        use_input_norm=bool(raw.get("eagle_use_input_norm", "input_norm1.weight" in tensors)),
        use_attn_norm=bool(raw.get("eagle_use_attn_norm", "layers.0.input_layernorm.weight" in tensors)),
        fc_bias="fc.bias" in tensors, attention_bias="layers.0.self_attn.q_proj.bias" in tensors)
    if c.head_dim != base.head_dim:
        raise EngineError(f"{src}: the draft head's head_dim is {c.head_dim} but the target's is {base.head_dim} "
                          "(the head shares the target's rotary tables)")
    head = EagleHead(c)
    want = head.state_dict()
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise EngineError(f"{src}: tensors do not match the config ({c.num_layers} layer(s)): "
                          f"missing {missing[:4]}, unexpected {extra[:4]}")
    for k, v in want.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise EngineError(f"{src}: tensor {k!r} has shape {tuple(tensors[k].shape)}, expected {tuple(v.shape)}")
    head.load_state_dict({k: t.float() for k, t in tensors.items()})
    return head.eval().requires_grad_(False), layout


def describe(head: EagleHead) -> dict:
    return asdict(head.config)


# ---- the target's head, whole or FR-pruned --------------------------------------------------------------
def head_rows(model, ids: torch.Tensor | None) -> torch.Tensor:
    """Dense rows of the target's LM head ([r, H] gathered by `ids`, or all [V, H] when None), in the model's
    dtype on its device. int4 rows are dequantized once, here, and only the kept ones."""
    from engine.model import _dense
    from engine.quant import Int4Weight

    lin = model.head
    w = lin.dense if lin.dense is not None else lin.weight
    if isinstance(w, torch.Tensor):
        rows = w if ids is None else w[ids.to(w.device)]
        return rows.to(model.device, model.dtype).contiguous()
    if isinstance(w, Int4Weight):
        if ids is not None:
            i = ids.to(w.packed.device)
            w = Int4Weight(w.packed[i], w.scales[i], w.mins[i], w.group_size, w.perm)
        return _dense(w, torch.float32).to(model.device, model.dtype).contiguous()
    raise EngineError(f"unsupported LM head weight type {type(w).__name__} for the Eagle draft head")
