"""Rotary tables: plain, linear, Llama-3, YaRN (as transformers computes them) and MiniCPM's LongRoPE.

All variants end in one (cos, sin) table of shape [max_seq_len, head_dim] in NeoX (rotate-half) order, with
any attention scaling already multiplied in, so the model only ever gathers rows by position.
"""
from __future__ import annotations

import math

import torch

from engine.config import ModelConfig


def _inv_freq(theta: float, dim: int) -> torch.Tensor:
    # float32, as transformers and MiniCPM compute it (bit-equal tables keep greedy tokens equal)
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)  # [dim/2]


def _llama3(inv: torch.Tensor, rs: dict) -> torch.Tensor:
    factor, low, high = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    orig = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > orig / low, inv / factor, inv)
    smooth = (orig / wavelen - low) / (high - low)
    mid = (1 - smooth) * scaled / factor + smooth * scaled
    is_mid = (wavelen >= orig / high) & (wavelen <= orig / low)
    return torch.where(is_mid, mid, scaled)


def _yarn(inv: torch.Tensor, rs: dict, cfg: ModelConfig, dim: int) -> tuple[torch.Tensor, float]:
    """transformers' `_compute_yarn_parameters` (NTK-by-parts interpolation + mscale)."""
    factor = rs["factor"]
    orig = rs.get("original_max_position_embeddings") or cfg.max_position_embeddings
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attn = rs.get("attention_factor")
    if attn is None:
        if rs.get("mscale") and rs.get("mscale_all_dim"):
            attn = mscale(factor, rs["mscale"]) / mscale(factor, rs["mscale_all_dim"])
        else:
            attn = mscale(factor)

    def corr_dim(rot: float) -> float:
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(cfg.rope_theta))

    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrap = 1 - ramp
    inv = (inv / factor) * (1 - extrap) + inv * extrap
    return inv, attn


def _longrope_minicpm(inv: torch.Tensor, rs: dict, cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """MiniCPM's `MiniCPMLongRoPE`: freqs = t * inv_freq / ext_factors, cos and sin both times
    sqrt(1 + ln(max_pos / orig) / ln(orig)). The factor list is chosen once from max_position_embeddings
    (MiniCPM builds its cache at that length), not from the prompt length."""
    orig = rs["original_max_position_embeddings"]
    scale = cfg.max_position_embeddings / orig
    attn = 1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(orig))
    ext = rs["long_factor"] if cfg.max_position_embeddings > orig else rs["short_factor"]
    return inv / torch.tensor(ext, dtype=torch.float32), attn


def rope_table(cfg: ModelConfig, max_seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each float32 [max_seq_len, head_dim], attention scaling folded in."""
    dim = cfg.head_dim
    inv = _inv_freq(cfg.rope_theta, dim)
    attn = 1.0
    rs = cfg.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        inv = inv / rs["factor"]
    elif kind == "llama3":
        inv = _llama3(inv, rs)
    elif kind == "yarn":
        inv, attn = _yarn(inv, rs, cfg, dim)
    elif kind == "longrope":
        inv, attn = _longrope_minicpm(inv, rs, cfg)
    # float32 positions x float32 inverse frequencies, as the reference implementations compute them
    t = torch.arange(max_seq_len, dtype=torch.float32)
    freqs = torch.outer(t, inv.float())  # [S, dim/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [S, dim]
    return emb.cos() * attn, emb.sin() * attn
