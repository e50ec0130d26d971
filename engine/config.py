"""One `ModelConfig` for every supported family, read from an HF `config.json` or from GGUF metadata.

MiniCPM's muP knobs are plain fields that are neutral for Llama/Qwen (see docs/formats.md for where each key
was checked):
    embeddings  * scale_emb
    residual    x + branch * scale_depth / sqrt(num_layers)        (MiniCPM only; 1.0 elsewhere)
    logits      lm_head(h / (hidden_size / dim_model_base))         (MiniCPM only)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import EngineError

# HF `architectures[0]` -> our family name
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "MiniCPMForCausalLM": "minicpm",
}


@dataclass
class ModelConfig:
    family: str  # "llama" | "qwen2" | "qwen3" | "minicpm"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    rope_scaling: dict | None = None  # as written in config.json ("rope_type" or "type" key)
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v biases (Qwen2)
    qk_norm: bool = False  # per-head RMSNorm on q and k before rotary (Qwen3)
    scale_emb: float = 1.0
    scale_depth: float | None = None  # MiniCPM residual knob; None = plain residual
    dim_model_base: float | None = None  # MiniCPM logit knob; None = plain head
    sparse_config: dict | None = None  # MiniCPM4 InfLLM v2 settings, kept for the sparse-attention path
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    torch_dtype: str | None = None  # the checkpoint's own dtype, e.g. "bfloat16"
    quantization: dict | None = None  # GPTQ `quantization_config` / `quantize_config.json`

    @property
    def residual_scale(self) -> float:
        return 1.0 if self.scale_depth is None else self.scale_depth / math.sqrt(self.num_layers)

    @property
    def logit_scale(self) -> float:
        """Multiplier on the final hidden state before the head: dim_model_base / hidden_size for MiniCPM."""
        return 1.0 if self.dim_model_base is None else self.dim_model_base / self.hidden_size

    @classmethod
    def from_hf(cls, raw: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        """Read an HF `config.json` dict (MiniCPM/MiniCPM4, Llama, Mistral, Qwen2, Qwen3)."""
        archs = raw.get("architectures") or []
        family = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
        if family is None:
            family = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                      "minicpm": "minicpm"}.get(raw.get("model_type", ""))
        if family is None:
            known = ", ".join(ARCHITECTURES)
            raise EngineError(f"{source}: unsupported architecture {archs or raw.get('model_type')!r} "
                              f"(supported: {known})")
        try:
            hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
            cfg = cls(
                family=family,
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_layers=int(raw["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
            )
        except KeyError as exc:
            raise EngineError(f"{source}: missing required key {exc.args[0]!r}") from None
        cfg.rms_norm_eps = float(raw.get("rms_norm_eps", 1e-6))
        cfg.rope_theta = float(raw.get("rope_theta") or (raw.get("rope_parameters") or {}).get("rope_theta")
                               or 10000.0)
        cfg.max_position_embeddings = int(raw.get("max_position_embeddings", 4096))
        scaling = raw.get("rope_scaling")
        if scaling is None and isinstance(raw.get("rope_parameters"), dict):  # transformers 5 spelling
            params = raw["rope_parameters"]
            scaling = params if params.get("rope_type", "default") != "default" else None
        cfg.rope_scaling = scaling or None
        # MiniCPM's configuration class defaults tie_word_embeddings to True and MiniCPM4-0.5B's config.json
        # omits the key (its 868 MB bf16 file only fits tied weights); Llama/Qwen default to False.
        cfg.tie_word_embeddings = bool(raw.get("tie_word_embeddings", family == "minicpm"))
        cfg.attention_bias = bool(raw.get("attention_bias", family == "qwen2"))
        cfg.qk_norm = family == "qwen3"
        if family == "minicpm":
            # defaults are MiniCPM's configuration_minicpm.py defaults, not "off"
            cfg.scale_emb = float(raw.get("scale_emb", 1))
            cfg.scale_depth = float(raw.get("scale_depth", 1))
            cfg.dim_model_base = float(raw.get("dim_model_base", 1))
            cfg.sparse_config = raw.get("sparse_config")
        cfg.bos_token_id = raw.get("bos_token_id")
        eos = raw.get("eos_token_id")
        cfg.eos_token_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos] if eos is not None else [])]
        cfg.torch_dtype = raw.get("torch_dtype") or raw.get("dtype")
        cfg.quantization = raw.get("quantization_config")
        cfg.validate(source)
        return cfg

    @classmethod
    def from_hf_dir(cls, directory: Path) -> "ModelConfig":
        path = directory / "config.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise EngineError(f"{directory}: no config.json (an HF checkpoint folder needs one)") from None
        except json.JSONDecodeError as exc:
            raise EngineError(f"{path}: not valid JSON ({exc})") from None
        cfg = cls.from_hf(raw, str(path))
        gen = directory / "generation_config.json"
        if gen.exists():  # generation_config's eos list is what HF generate() stops on
            eos = json.loads(gen.read_text()).get("eos_token_id")
            for e in eos if isinstance(eos, list) else [eos] if eos is not None else []:
                if int(e) not in cfg.eos_token_ids:
                    cfg.eos_token_ids.append(int(e))
        qc = directory / "quantize_config.json"
        if cfg.quantization is None and qc.exists():
            cfg.quantization = json.loads(qc.read_text())
        return cfg

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], tensor_names: set[str], source: str) -> "ModelConfig":
        """Read llama.cpp metadata keys (`llama.*`, `tokenizer.ggml.*`)."""
        arch = meta.get("general.architecture")
        if arch not in ("llama", "qwen2", "qwen3", "minicpm"):
            raise EngineError(f"{source}: GGUF architecture {arch!r} is not supported "
                              "(supported: llama, qwen2, qwen3, minicpm)")

        def get(key: str, default: Any = None) -> Any:
            value = meta.get(f"{arch}.{key}", default)
            if value is None:
                raise EngineError(f"{source}: GGUF metadata lacks {arch}.{key}")
            return value

        hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
        tokens = meta.get("tokenizer.ggml.tokens")
        vocab = meta.get(f"{arch}.vocab_size") or (len(tokens) if isinstance(tokens, list) else tokens)
        cfg = cls(
            family=arch,
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length")),
            num_layers=int(get("block_count")),
            num_heads=heads,
            num_kv_heads=int(get("attention.head_count_kv", heads)),
            head_dim=int(meta.get(f"{arch}.attention.key_length") or hidden // heads),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            max_position_embeddings=int(get("context_length", 4096)),
            tie_word_embeddings="output.weight" not in tensor_names,
            attention_bias="blk.0.attn_q.bias" in tensor_names,
            qk_norm="blk.0.attn_q_norm.weight" in tensor_names,
        )
        if arch == "minicpm":
            cfg.family = "minicpm"
            cfg.tie_word_embeddings = "output.weight" not in tensor_names
            _minicpm_gguf_scales(cfg, meta)
        kind = meta.get(f"{arch}.rope.scaling.type")
        if kind == "longrope":  # the factor lists are tensors (rope_factors_*), filled in by the GGUF loader
            cfg.rope_scaling = {"rope_type": "longrope",
                                "original_max_position_embeddings": cfg.max_position_embeddings}
        elif kind and kind != "none":
            cfg.rope_scaling = {"rope_type": kind, "factor": float(meta.get(f"{arch}.rope.scaling.factor", 1.0))}
            orig = meta.get(f"{arch}.rope.scaling.original_context_length")
            if orig:
                cfg.rope_scaling["original_max_position_embeddings"] = int(orig)
        cfg.bos_token_id = meta.get("tokenizer.ggml.bos_token_id")
        eos = meta.get("tokenizer.ggml.eos_token_id")
        cfg.eos_token_ids = [int(eos)] if eos is not None else []
        eot = meta.get("tokenizer.ggml.eot_token_id")
        if eot is not None and int(eot) not in cfg.eos_token_ids:
            cfg.eos_token_ids.append(int(eot))
        cfg.validate(source)
        return cfg

    def validate(self, source: str) -> None:
        if self.num_heads % self.num_kv_heads:
            raise EngineError(f"{source}: num_attention_heads {self.num_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise EngineError(f"{source}: head_dim {self.head_dim} must be even for rotary embeddings")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("default", "linear", "llama3", "yarn", "longrope"):
                raise EngineError(f"{source}: rope_scaling type {kind!r} is not supported "
                                  "(supported: linear, llama3, yarn, longrope)")


def _minicpm_gguf_scales(cfg: ModelConfig, meta: dict[str, Any]) -> None:
    """llama.cpp's converter writes MiniCPM's muP knobs as derived values: minicpm.embedding_scale = scale_emb,
    minicpm.residual_scale = scale_depth / sqrt(layers), minicpm.logit_scale = hidden_size / dim_model_base
    (the logits divisor). Missing keys take llama.cpp's defaults for older files (12, 1.4 / sqrt(layers), and
    MiniCPM's dim_model_base 256)."""
    cfg.scale_emb = float(meta.get("minicpm.embedding_scale", 12.0))
    residual = float(meta.get("minicpm.residual_scale", 1.4 / math.sqrt(cfg.num_layers)))
    cfg.scale_depth = residual * math.sqrt(cfg.num_layers)
    logit_div = meta.get("minicpm.logit_scale")
    cfg.dim_model_base = 256.0 if logit_div is None else cfg.hidden_size / float(logit_div)
