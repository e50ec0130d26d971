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
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import EngineError

# Bounds far above any real model, low enough that a hand-edited size cannot make the loader allocate terabytes.
MAX_VOCAB = 1 << 24
MAX_WIDTH = 1 << 18  # hidden / intermediate size
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_CONTEXT = 1 << 25

# HF `architectures[0]` -> our family name
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "MiniCPMForCausalLM": "minicpm",
}


class StrictModel(BaseModel):
    """Strict JSON types (a string or a bool is not a size), finite numbers, unknown keys ignored."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", protected_namespaces=(),
                              populate_by_name=True)


def _count(top: int):
    return Annotated[int, Field(ge=1, le=top)]


TokenId = Annotated[int, Field(ge=0, le=MAX_VOCAB)]
Positive = Annotated[float, Field(gt=0)]


class QuantizeConfig(StrictModel):
    """GPTQ's `quantization_config` / `quantize_config.json`: the keys the loader reads, checked; the rest kept."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")
    quant_method: str = "gptq"
    bits: Annotated[int, Field(ge=1, le=16)] = 4
    group_size: Annotated[int, Field(ge=-1, le=MAX_WIDTH)] = 128  # -1: one group per row

    @field_validator("group_size")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("group_size must be -1 (one group) or a positive number of columns")
        return value
    checkpoint_format: str = "gptq"
    desc_act: bool | None = None
    sym: bool | None = None


class GenerationConfigFile(StrictModel):
    eos_token_id: TokenId | list[TokenId] | None = None


class HFConfigFile(StrictModel):
    """The keys of an HF `config.json` the engine reads, with their types and ranges."""

    architectures: list[str] | None = None
    model_type: str | None = None
    vocab_size: _count(MAX_VOCAB)
    hidden_size: _count(MAX_WIDTH)
    intermediate_size: _count(MAX_WIDTH)
    num_hidden_layers: _count(MAX_LAYERS)
    num_attention_heads: _count(MAX_HEADS)
    num_key_value_heads: _count(MAX_HEADS) | None = None
    head_dim: _count(MAX_WIDTH) | None = None
    rms_norm_eps: Annotated[float, Field(gt=0, lt=1)] = 1e-6
    rope_theta: Positive | None = None
    rope_parameters: dict[str, Any] | None = None
    max_position_embeddings: _count(MAX_CONTEXT) = 4096
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool | None = None
    attention_bias: bool | None = None
    scale_emb: Positive | None = None
    scale_depth: Positive | None = None
    dim_model_base: Positive | None = None
    sparse_config: dict[str, Any] | None = None
    bos_token_id: TokenId | None = None
    eos_token_id: TokenId | list[TokenId] | None = None
    torch_dtype: str | None = None
    dtype: str | None = None
    quantization_config: QuantizeConfig | None = None


class GGUFHParams(StrictModel):
    """llama.cpp's `{arch}.*` hyperparameters (prefix removed) and the tokenizer keys the engine reads."""

    embedding_length: _count(MAX_WIDTH)
    feed_forward_length: _count(MAX_WIDTH)
    block_count: _count(MAX_LAYERS)
    head_count: _count(MAX_HEADS) = Field(alias="attention.head_count")
    head_count_kv: _count(MAX_HEADS) | None = Field(None, alias="attention.head_count_kv")
    key_length: _count(MAX_WIDTH) | None = Field(None, alias="attention.key_length")
    rms_eps: Annotated[float, Field(gt=0, lt=1)] = Field(1e-6, alias="attention.layer_norm_rms_epsilon")
    freq_base: Positive = Field(10000.0, alias="rope.freq_base")
    context_length: _count(MAX_CONTEXT) = 4096
    vocab_size: _count(MAX_VOCAB) | None = None
    scaling_type: str | None = Field(None, alias="rope.scaling.type")
    scaling_factor: Positive = Field(1.0, alias="rope.scaling.factor")
    original_context: _count(MAX_CONTEXT) | None = Field(None, alias="rope.scaling.original_context_length")
    tokens: Annotated[list[str], Field(min_length=1, max_length=MAX_VOCAB)] | None = Field(
        None, alias="tokenizer.ggml.tokens")
    tokenizer_model: str | None = Field(None, alias="tokenizer.ggml.model")
    merges: Annotated[list[str], Field(max_length=MAX_VOCAB * 4)] | None = Field(None, alias="tokenizer.ggml.merges")
    scores: list[float] | None = Field(None, alias="tokenizer.ggml.scores")
    token_type: list[int] | None = Field(None, alias="tokenizer.ggml.token_type")
    bos: TokenId | None = Field(None, alias="tokenizer.ggml.bos_token_id")
    eos: TokenId | None = Field(None, alias="tokenizer.ggml.eos_token_id")
    eot: TokenId | None = Field(None, alias="tokenizer.ggml.eot_token_id")
    embedding_scale: Positive | None = None  # minicpm.* (the arch prefix is removed before the check)
    residual_scale: Positive | None = None
    logit_scale: Positive | None = None


def checked(model: type[BaseModel], raw: Any, source: str, prefix: str = ""):
    """`model` read from `raw`, or one EngineError line naming the file, the key and what is wrong with it."""
    if not isinstance(raw, dict):
        raise EngineError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = model.model_fields.get(str(err["loc"][0])) if err["loc"] else None
        key = (field.alias if field is not None and field.alias else
               ".".join(str(p) for p in err["loc"] if not str(p).startswith(("list[", "constrained"))))
        got = "missing" if err["type"] == "missing" else f"got {err['input']!r}"[:80]
        label = key if key.startswith("tokenizer.") else prefix + key
        raise EngineError(f"{source}: {label}: {err['msg'].lower()} ({got})") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise EngineError(f"{path}: not valid JSON ({str(exc)[:120]})") from None


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
        """Read an HF `config.json` dict (MiniCPM/MiniCPM4, Llama, Mistral, Qwen2, Qwen3), checked first."""
        if not isinstance(raw, dict):
            raise EngineError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        archs = raw.get("architectures") or []
        archs = archs if isinstance(archs, list) else [archs]
        family = next((ARCHITECTURES[a] for a in archs if isinstance(a, str) and a in ARCHITECTURES), None)
        if family is None:
            family = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                      "minicpm": "minicpm"}.get(raw.get("model_type") if isinstance(raw.get("model_type"), str)
                                                else "")
        if family is None:
            known = ", ".join(ARCHITECTURES)
            raise EngineError(f"{source}: unsupported architecture {archs or raw.get('model_type')!r} "
                              f"(supported: {known})")
        c = checked(HFConfigFile, raw, source)
        heads = c.num_attention_heads
        if c.head_dim is None and c.hidden_size % heads:
            raise EngineError(f"{source}: hidden_size {c.hidden_size} is not a multiple of num_attention_heads "
                              f"{heads} (and no head_dim is given)")
        cfg = cls(family=family, vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                  intermediate_size=c.intermediate_size, num_layers=c.num_hidden_layers, num_heads=heads,
                  num_kv_heads=c.num_key_value_heads or heads, head_dim=c.head_dim or c.hidden_size // heads)
        cfg.rms_norm_eps = c.rms_norm_eps
        theta = c.rope_theta or (c.rope_parameters or {}).get("rope_theta") or 10000.0
        if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not 0 < theta < math.inf:
            raise EngineError(f"{source}: rope_parameters.rope_theta must be a positive number (got {theta!r})")
        cfg.rope_theta = float(theta)
        cfg.max_position_embeddings = c.max_position_embeddings
        scaling = c.rope_scaling
        if scaling is None and c.rope_parameters is not None:  # transformers 5 spelling
            scaling = c.rope_parameters if c.rope_parameters.get("rope_type", "default") != "default" else None
        cfg.rope_scaling = scaling or None
        # MiniCPM's configuration class defaults tie_word_embeddings to True and MiniCPM4-0.5B's config.json
        # omits the key (its 868 MB bf16 file only fits tied weights); Llama/Qwen default to False.
        cfg.tie_word_embeddings = c.tie_word_embeddings if c.tie_word_embeddings is not None else family == "minicpm"
        cfg.attention_bias = c.attention_bias if c.attention_bias is not None else family == "qwen2"
        cfg.qk_norm = family == "qwen3"
        if family == "minicpm":
            # defaults are MiniCPM's configuration_minicpm.py defaults, not "off"
            cfg.scale_emb = c.scale_emb or 1.0
            cfg.scale_depth = c.scale_depth or 1.0
            cfg.dim_model_base = c.dim_model_base or 1.0
            cfg.sparse_config = c.sparse_config
        cfg.bos_token_id = c.bos_token_id
        eos = c.eos_token_id
        cfg.eos_token_ids = list(eos) if isinstance(eos, list) else [eos] if eos is not None else []
        cfg.torch_dtype = c.torch_dtype or c.dtype
        cfg.quantization = c.quantization_config.model_dump() if c.quantization_config else None
        cfg.validate(source)
        return cfg

    @classmethod
    def from_hf_dir(cls, directory: Path) -> "ModelConfig":
        path = directory / "config.json"
        if not path.is_file():
            raise EngineError(f"{directory}: no config.json (an HF checkpoint folder needs one)")
        cfg = cls.from_hf(read_json(path), str(path))
        gen = directory / "generation_config.json"
        if gen.exists():  # generation_config's eos list is what HF generate() stops on
            eos = checked(GenerationConfigFile, read_json(gen), str(gen)).eos_token_id
            for e in eos if isinstance(eos, list) else [eos] if eos is not None else []:
                if e not in cfg.eos_token_ids:
                    cfg.eos_token_ids.append(e)
        qc = directory / "quantize_config.json"
        if cfg.quantization is None and qc.exists():
            cfg.quantization = checked(QuantizeConfig, read_json(qc), str(qc)).model_dump()
        return cfg

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], tensor_names: set[str], source: str) -> "ModelConfig":
        """Read llama.cpp metadata keys (`llama.*`, `tokenizer.ggml.*`), checked for presence, type and range."""
        arch = meta.get("general.architecture")
        if arch not in ("llama", "qwen2", "qwen3", "minicpm"):
            raise EngineError(f"{source}: GGUF architecture {arch!r} is not supported "
                              "(supported: llama, qwen2, qwen3, minicpm)")
        raw = {k.removeprefix(f"{arch}."): v for k, v in meta.items()
               if k.startswith((f"{arch}.", "tokenizer.ggml."))}
        h = checked(GGUFHParams, raw, source, prefix=f"GGUF metadata {arch}.")
        hidden, heads = h.embedding_length, h.head_count
        if h.key_length is None and hidden % heads:
            raise EngineError(f"{source}: GGUF {arch}.embedding_length {hidden} is not a multiple of "
                              f"{arch}.attention.head_count {heads}")
        for name, values in (("scores", h.scores), ("token_type", h.token_type)):
            if values is not None and h.tokens is not None and len(values) != len(h.tokens):
                raise EngineError(f"{source}: GGUF tokenizer.ggml.{name} has {len(values)} entries for "
                                  f"{len(h.tokens)} tokens")
        vocab = h.vocab_size or (len(h.tokens) if h.tokens else None)
        if vocab is None:
            raise EngineError(f"{source}: GGUF metadata has neither {arch}.vocab_size nor tokenizer.ggml.tokens")
        cfg = cls(
            family=arch, vocab_size=vocab, hidden_size=hidden, intermediate_size=h.feed_forward_length,
            num_layers=h.block_count, num_heads=heads, num_kv_heads=h.head_count_kv or heads,
            head_dim=h.key_length or hidden // heads, rms_norm_eps=h.rms_eps, rope_theta=h.freq_base,
            max_position_embeddings=h.context_length,
            tie_word_embeddings="output.weight" not in tensor_names,
            attention_bias="blk.0.attn_q.bias" in tensor_names,
            qk_norm="blk.0.attn_q_norm.weight" in tensor_names,
        )
        if arch == "minicpm":
            _minicpm_gguf_scales(cfg, h)
        kind = h.scaling_type
        if kind == "longrope":  # the factor lists are tensors (rope_factors_*), filled in by the GGUF loader
            cfg.rope_scaling = {"rope_type": "longrope",
                                "original_max_position_embeddings": cfg.max_position_embeddings}
        elif kind and kind != "none":
            cfg.rope_scaling = {"rope_type": kind, "factor": h.scaling_factor}
            if h.original_context:
                cfg.rope_scaling["original_max_position_embeddings"] = h.original_context
        cfg.bos_token_id = h.bos
        cfg.eos_token_ids = [h.eos] if h.eos is not None else []
        if h.eot is not None and h.eot not in cfg.eos_token_ids:
            cfg.eos_token_ids.append(h.eot)
        cfg.validate(source)
        return cfg

    def validate(self, source: str) -> None:
        for name, top in (("head_dim", MAX_WIDTH), ("num_kv_heads", MAX_HEADS)):
            if not 1 <= getattr(self, name) <= top:
                raise EngineError(f"{source}: {name} {getattr(self, name)} is out of range (1..{top})")
        if self.num_heads % self.num_kv_heads:
            raise EngineError(f"{source}: num_attention_heads {self.num_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise EngineError(f"{source}: head_dim {self.head_dim} must be even for rotary embeddings")
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, dict):
                raise EngineError(f"{source}: rope_scaling must be an object, got {self.rope_scaling!r}"[:200])
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ("default", "linear", "llama3", "yarn", "longrope"):
                raise EngineError(f"{source}: rope_scaling type {kind!r} is not supported "
                                  "(supported: linear, llama3, yarn, longrope)")


def _minicpm_gguf_scales(cfg: ModelConfig, h: GGUFHParams) -> None:
    """llama.cpp's converter writes MiniCPM's muP knobs as derived values: minicpm.embedding_scale = scale_emb,
    minicpm.residual_scale = scale_depth / sqrt(layers), minicpm.logit_scale = hidden_size / dim_model_base
    (the logits divisor). Missing keys take llama.cpp's defaults for older files (12, 1.4 / sqrt(layers), and
    MiniCPM's dim_model_base 256)."""
    cfg.scale_emb = h.embedding_scale or 12.0
    residual = h.residual_scale or 1.4 / math.sqrt(cfg.num_layers)
    cfg.scale_depth = residual * math.sqrt(cfg.num_layers)
    cfg.dim_model_base = 256.0 if h.logit_scale is None else cfg.hidden_size / h.logit_scale
