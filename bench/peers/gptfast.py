"""gpt-fast-style peer: static KV cache + `torch.compile(mode="reduce-overhead")` decode, bf16 or int4.

Written after pytorch-labs/gpt-fast's model.py/generate.py (Llama block, SDPA with a static-cache mask,
only the one-token decode step compiled); int4 is its WeightOnlyInt4Linear: torch's tinygemm kernel
`aten._weight_int4pack_mm` (group 128, inner_k_tiles 8). Random weights: a speed peer, not a model.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.peers.shapes import Shape


def _rand(*shape, device) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=torch.bfloat16) * 0.02


class Int4Linear(nn.Module):
    """tinygemm int4 linear: w = (code - 8) * scale + zero per group of `group` input columns."""

    def __init__(self, n_in: int, n_out: int, device, group: int = 128, inner_k_tiles: int = 8):
        super().__init__()
        codes = torch.randint(0, 16, (n_out, n_in), device=device, dtype=torch.int32)
        packed = ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8)  # tinygemm: high nibble = even column
        self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack(packed, inner_k_tiles))
        scales = torch.rand(n_in // group, n_out, device=device) * 0.004 + 0.001
        zeros = torch.randn(n_in // group, n_out, device=device) * 0.001
        self.register_buffer("scales_and_zeros", torch.stack([scales, zeros], -1).to(torch.bfloat16))
        self.codes, self.group, self.n_out = codes, group, n_out  # codes kept only for the self-check

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, x.shape[-1]), self.weight, self.group,
                                               self.scales_and_zeros)
        return y.reshape(*x.shape[:-1], self.n_out)

    def dense(self) -> torch.Tensor:
        """The weight it should compute with, for a correctness check of the peer itself."""
        s, z = self.scales_and_zeros.float().unbind(-1)  # [K / g, N]
        s, z = s.repeat_interleave(self.group, 0).t(), z.repeat_interleave(self.group, 0).t()
        return (self.codes.float() - 8) * s + z


def _linear(n_in: int, n_out: int, quant: str, device) -> nn.Module:
    if quant == "int4":
        return Int4Linear(n_in, n_out, device)
    lin = nn.Linear(n_in, n_out, bias=False, device=device, dtype=torch.bfloat16)
    nn.init.normal_(lin.weight, std=0.02)
    return lin


class Block(nn.Module):
    def __init__(self, s: Shape, quant: str, batch: int, max_len: int, device):
        super().__init__()
        d = s.head_dim
        self.s = s
        self.wqkv = _linear(s.hidden, (s.heads + 2 * s.kv_heads) * d, quant, device)
        self.wo = _linear(s.heads * d, s.hidden, quant, device)
        self.w13 = _linear(s.hidden, 2 * s.inter, quant, device)
        self.w2 = _linear(s.inter, s.hidden, quant, device)
        self.n1 = nn.Parameter(torch.ones(s.hidden, device=device, dtype=torch.bfloat16))
        self.n2 = nn.Parameter(torch.ones(s.hidden, device=device, dtype=torch.bfloat16))
        shape = (batch, s.kv_heads, max_len, d)
        self.register_buffer("k_cache", torch.zeros(shape, device=device, dtype=torch.bfloat16))
        self.register_buffer("v_cache", torch.zeros(shape, device=device, dtype=torch.bfloat16))

    def forward(self, x, cos, sin, mask, input_pos):
        s, d = self.s, self.s.head_dim
        b, t, _ = x.shape
        q, k, v = self.wqkv(F.rms_norm(x, (s.hidden,), self.n1, s.eps)).split(
            [s.heads * d, s.kv_heads * d, s.kv_heads * d], dim=-1)
        q, k = _rope(q.view(b, t, s.heads, d), cos, sin), _rope(k.view(b, t, s.kv_heads, d), cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.view(b, t, s.kv_heads, d).transpose(1, 2)
        self.k_cache[:, :, input_pos] = k
        self.v_cache[:, :, input_pos] = v
        y = F.scaled_dot_product_attention(q, self.k_cache, self.v_cache, attn_mask=mask, enable_gqa=True)
        x = x + self.wo(y.transpose(1, 2).reshape(b, t, s.heads * d))
        g, u = self.w13(F.rms_norm(x, (s.hidden,), self.n2, s.eps)).chunk(2, dim=-1)
        return x + self.w2(F.silu(g) * u)


def _rope(x, cos, sin):  # x [B, T, H, D]; cos/sin [T, D / 2]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1).to(x.dtype)


class Transformer(nn.Module):
    """gpt-fast's Transformer at a MiniCPM4 shape, with its static caches set up for (batch, max_len)."""

    def __init__(self, s: Shape, quant: str, batch: int, max_len: int, device="cuda"):
        super().__init__()
        self.s = s
        self.embed = nn.Parameter(_rand(s.vocab, s.hidden, device=device))
        self.layers = nn.ModuleList(Block(s, quant, batch, max_len, device) for _ in range(s.layers))
        self.norm = nn.Parameter(torch.ones(s.hidden, device=device, dtype=torch.bfloat16))
        self.head = self.embed if s.tied else nn.Parameter(_rand(s.vocab, s.hidden, device=device))
        inv = 1.0 / (10000 ** (torch.arange(0, s.head_dim, 2, device=device).float() / s.head_dim))
        ang = torch.arange(max_len, device=device).float()[:, None] * inv[None]
        self.register_buffer("cos", ang.cos())
        self.register_buffer("sin", ang.sin())
        self.register_buffer("causal", torch.tril(torch.ones(max_len, max_len, dtype=torch.bool, device=device)))

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """idx [B, T], input_pos [T] -> logits [B, T, V]."""
        mask = self.causal[None, None, input_pos]
        cos, sin = self.cos[input_pos], self.sin[input_pos]
        x = F.embedding(idx, self.embed)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, input_pos)
        return F.linear(F.rms_norm(x, (self.s.hidden,), self.norm, self.s.eps), self.head)


def decode_one_token(model: Transformer, cur: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """cur [B, 1], input_pos [1] -> next greedy tokens [B, 1] (argmax on the GPU, no host sync)."""
    return model(cur, input_pos)[:, -1].argmax(-1, keepdim=True)


def time_decode(model: Transformer, batch: int, prompt_len: int, gen_len: int, warmup: int = 8) -> dict:
    """Prefill (eager) then `gen_len` compiled decode steps; milliseconds from CUDA events."""
    step = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True)
    idx = torch.randint(0, model.s.vocab, (batch, prompt_len), device="cuda")
    with torch.no_grad():
        for _ in range(2):  # warm-up: compile, capture the graphs
            model(idx, torch.arange(prompt_len, device="cuda"))
            cur = torch.zeros(batch, 1, dtype=torch.long, device="cuda")
            for i in range(warmup):
                cur = step(model, cur, torch.tensor([prompt_len + i], device="cuda")).clone()
        t = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        t[0].record()
        cur = model(idx, torch.arange(prompt_len, device="cuda"))[:, -1].argmax(-1, keepdim=True)
        t[1].record()
        positions = torch.arange(prompt_len, prompt_len + gen_len, device="cuda")
        for i in range(gen_len):
            cur = step(model, cur, positions[i:i + 1]).clone()
        t[2].record()
        torch.cuda.synchronize()
    prefill_ms, decode_ms = t[0].elapsed_time(t[1]), t[1].elapsed_time(t[2])
    return {"prefill_ms": prefill_ms, "decode_ms_per_step": decode_ms / gen_len,
            "decode_tok_s": batch * gen_len / (decode_ms / 1e3)}
