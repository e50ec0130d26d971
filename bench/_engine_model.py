"""A compact decoder of a MiniCPM4 shape built from engine/kernels/, with random weights.

`cpm bench engine` no longer uses it (it times the engine itself, bench/_random_engine.py). Kept because
bench/attention.py (dense vs InfLLM v2 whole-model comparison) subclasses KernelModel and bench/_engine_micro.py
uses `random_int4`; it goes once those move to the engine (a Runner with `runner.attn` set).

Decode step per layer (int4): fused RMSNorm+residual, fused q|k|v GEMV, rotary + KV-cache write, flash-decoding
(split + merge), o GEMV, fused RMSNorm+residual, gate|up GEMV with SwiGLU in its epilogue, down GEMV: 9
kernels. bf16 uses cuBLAS for the projections plus the SwiGLU kernel. The whole step, greedy argmax and the
position update included, is captured in one CUDA graph (per batch size), so decoding replays graphs with no
host sync and no allocation. Prefill runs eagerly: int4 projections dequantize into a scratch + cuBLAS,
attention is SDPA (causal, GQA) over the freshly written cache.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.peers.shapes import Shape
from engine.kernels.decode_attention import decode_attention
from engine.kernels.int4_matmul import PackedInt4, int4_matmul, repack_int4
from engine.kernels.rmsnorm import rms_norm
from engine.kernels.rotary import rotary_kv
from engine.kernels.swiglu import swiglu
from engine.quant import Int4Weight, pack_int4


def random_int4(n: int, k: int, group: int, device) -> PackedInt4:
    """Random int4 weight of [n, k] (codes 0..15, scale ~ 1e-3, min ~ -8 scale) in the kernel layout."""
    codes = torch.randint(0, 16, (n, k), device=device, dtype=torch.uint8)
    scales = torch.rand(n, k // group, device=device) * 0.004 + 0.001
    mins = -8 * scales + torch.randn_like(scales) * 1e-3
    return repack_int4(Int4Weight(pack_int4(codes), scales.bfloat16(), mins.bfloat16(), group))


class KernelModel:
    """Random-weight decoder; `decode_graph` captures one greedy step for a fixed batch."""

    def __init__(self, s: Shape, quant: str, batch: int, max_len: int, device="cuda", group: int = 128):
        self.s, self.quant, self.batch, self.max_len = s, quant, batch, max_len
        d, dev = s.head_dim, device
        qkv_out = (s.heads + 2 * s.kv_heads) * d

        def lin(n, k):
            # random rows: for int4 they already are "gate0, up0, ..." (interleave_rows, the GEMV's SwiGLU
            # epilogue order), for bf16 "gate | up" (the swiglu kernel's)
            if quant == "int4":
                return random_int4(n, k, group, dev)
            return torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02

        self.layers = [dict(qkv=lin(qkv_out, s.hidden), o=lin(s.hidden, s.heads * d),
                            gu=lin(2 * s.inter, s.hidden), down=lin(s.hidden, s.inter),
                            n1=torch.rand(s.hidden, device=dev, dtype=torch.bfloat16) + 0.5,
                            n2=torch.rand(s.hidden, device=dev, dtype=torch.bfloat16) + 0.5)
                       for _ in range(s.layers)]
        self.embed = torch.randn(s.vocab, s.hidden, device=dev, dtype=torch.bfloat16) * 0.02
        self.head = self.embed if s.tied else torch.randn(s.vocab, s.hidden, device=dev, dtype=torch.bfloat16) * 0.02
        self.norm = torch.rand(s.hidden, device=dev, dtype=torch.bfloat16) + 0.5
        # one pool for every layer's K and V: [L, 2, B, Hkv, S, D]
        self.kv = torch.zeros(s.layers, 2, batch, s.kv_heads, max_len, d, device=dev, dtype=torch.bfloat16)
        inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=dev).float() / d))
        ang = torch.arange(max_len, device=dev).float()[:, None] * inv[None]
        self.cos, self.sin = ang.cos().contiguous(), ang.sin().contiguous()  # [S, D / 2]

    def weight_bytes(self) -> int:
        """Bytes a decode step must read for weights (projections, norms, head, one embedding row a token)."""
        def nbytes(w):
            return sum(t.numel() * t.element_size() for t in ((w.qweight, w.scales, w.mins) if isinstance(
                w, PackedInt4) else (w,)))
        per_layer = sum(nbytes(lyr[k]) for lyr in self.layers for k in ("qkv", "o", "gu", "down", "n1", "n2"))
        return per_layer + self.head.numel() * 2 + self.norm.numel() * 2

    def _linear(self, x, w, swiglu_out=False, out_dtype=torch.bfloat16):
        if isinstance(w, PackedInt4):
            return int4_matmul(x, w, swiglu=swiglu_out, out_dtype=out_dtype)
        y = x.to(torch.bfloat16) @ w.t()
        return swiglu(y, out_dtype) if swiglu_out else y

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, bidx: torch.Tensor, decode: bool) -> torch.Tensor:
        """tokens/pos/bidx [T] (T = B for decode, B * P for prefill) -> last hidden states [T, H] normed."""
        s, d = self.s, self.s.head_dim
        t = tokens.shape[0]
        cos, sin = self.cos[pos], self.sin[pos]
        x_dtype = torch.float32 if (self.quant == "int4" and t == 1) else torch.bfloat16  # GEMV reads fp32
        h = F.embedding(tokens, self.embed)  # [T, H] residual stream
        out = None
        for i, lyr in enumerate(self.layers):
            xn, h = rms_norm(h if out is None else out, lyr["n1"], s.eps, None if out is None else h, x_dtype)
            qkv = self._linear(xn, lyr["qkv"]).view(t, s.heads + 2 * s.kv_heads, d)
            q, k, v = qkv[:, :s.heads], qkv[:, s.heads:s.heads + s.kv_heads], qkv[:, s.heads + s.kv_heads:]
            kc, vc = self.kv[i, 0], self.kv[i, 1]
            rotary_kv(q, k, v, cos, sin, kc, vc, bidx, pos)
            if decode:
                a = decode_attention(q, kc, vc, pos + 1)  # [B, Hq, D]
            else:  # prefill of B sequences of P tokens each, from position 0
                b = self.batch
                p = t // b
                qq = q.reshape(b, p, s.heads, d).transpose(1, 2)
                a = F.scaled_dot_product_attention(qq, kc[:b, :, :p], vc[:b, :, :p], is_causal=True,
                                                   enable_gqa=True).transpose(1, 2)
            o = self._linear(a.reshape(t, s.heads * d), lyr["o"])
            xn, h = rms_norm(o, lyr["n2"], s.eps, h, x_dtype)
            out = self._linear(self._linear(xn, lyr["gu"], swiglu_out=True, out_dtype=x_dtype), lyr["down"])
        return rms_norm(out, self.norm, s.eps, h)[0]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.to(torch.bfloat16) @ self.head.t()  # [T, V]

    def prefill(self, prompts: torch.Tensor) -> torch.Tensor:
        """prompts [B, P] -> first generated tokens [B] (greedy); fills the cache at positions 0..P-1."""
        b, p = prompts.shape
        pos = torch.arange(p, device=prompts.device, dtype=torch.int32).repeat(b)
        bidx = torch.arange(b, device=prompts.device, dtype=torch.int32).repeat_interleave(p)
        hidden = self.forward(prompts.reshape(-1), pos, bidx, decode=False).view(b, p, -1)[:, -1]
        return self.logits(hidden).argmax(-1)

    def decode_graph(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.cuda.CUDAGraph:
        """Capture one greedy step on static buffers: tokens [B] int64 <- argmax; pos [B] int32 += 1."""
        bidx = torch.arange(tokens.shape[0], device=tokens.device, dtype=torch.int32)

        def step():
            nxt = self.logits(self.forward(tokens, pos, bidx, decode=True)).argmax(-1)
            tokens.copy_(nxt)
            pos.add_(1)

        saved = (tokens.clone(), pos.clone())  # cache entries past pos are never read: no need to save them
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph: autotuning and compilation happen here
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        tokens.copy_(saved[0])
        pos.copy_(saved[1])
        return graph
