"""The decoder: embeddings, RMSNorm, rotary, GQA attention, SwiGLU MLP, tied or untied head.

One class serves Llama, Qwen2 (q/k/v bias), Qwen3 (q/k norm) and MiniCPM (muP knobs from ModelConfig).
Plain objects rather than nn.Modules: the weights come from loaders, and per-call module overhead is the
decode loop's main Python cost on CPU. Every hot op goes through engine/ops.py.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine import ops
from engine.config import ModelConfig
from engine.cpu_head import CpuHead, to_cpu_head
from engine.cpu_int4 import CpuInt4, to_cpu_int4
from engine.cpu_q4 import CpuQ4, LayerStep, to_cpu_q4
from engine.errors import EngineError
from engine.quant import Int4Weight, dequantize

Weight = torch.Tensor | Int4Weight


@dataclass(kw_only=True)
class StepContext:
    """Per-step attention metadata, built once by the runner (Runner.context) and read by every layer (nano-vllm
    style). Keyword-only, so no caller can put a field in the wrong place."""
    kv_len: int  # cache length attended to
    cos: torch.Tensor  # [B, T, D]
    sin: torch.Tensor  # [B, T, D]
    rows: slice = field(default_factory=lambda: slice(0, 1))  # which cache rows this step writes/reads
    start: int | None = None  # uniform first position of this step's tokens (prefill, batch-1 decode)
    pos: torch.Tensor | None = None  # int64 [B]: per-row position for batched decode (T == 1)
    mask: torch.Tensor | None = None  # bool [B, 1, T, kv_len] or None
    causal: bool = False
    # Optional attention backend (e.g. InfLLM v2 sparse attention), called after the cache write as
    # attn(layer, q [B, H, T, D] roped, kc, vc [B, KVH, L, D] cache views up to kv_len, ctx, q_raw, k_raw
    # [B, T, H|KVH, D] before rotary) -> o [B, H, T, D]. None = ops.attention (dense).
    attn: object | None = None
    # int32 [B]: each row's attended cache length, read on the device (decode, T == 1). Set by the CUDA-graph
    # decode, which attends over the whole cache capacity (kv_len = max_seq_len) so one graph serves every step.
    lengths: torch.Tensor | None = None
    # The paged pool's metadata (engine/cache.PagedStep): set, the cache passed to the layers is a PagedKVCache,
    # rows/start/pos are unused and every row reads and writes its K/V through its block table.
    paged: object | None = None
    _slots: tuple | None = field(default=None, repr=False)  # (cache rows, cache slots) int32 [B * T], per step
    _sin_signed: torch.Tensor | None = field(default=None, repr=False)

    def sin_signed(self) -> torch.Tensor:
        """sin with its first half negated (ops.rotary_qk's form of rotate-half), computed once a step."""
        if self._sin_signed is None:
            half = self.sin.shape[-1] // 2
            self._sin_signed = torch.cat([-self.sin[..., :half], self.sin[..., half:]], dim=-1)
        return self._sin_signed

    def slots(self, B: int, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cache row and slot of each of this step's B * T tokens (int32, token-major), computed once a step."""
        if self._slots is None:
            rows = torch.arange(self.rows.start, self.rows.start + B, device=device, dtype=torch.int32)
            if self.pos is None:
                slots = torch.arange(self.start, self.start + T, device=device, dtype=torch.int32).repeat(B)
            else:
                slots = self.pos.to(torch.int32)
            self._slots = (rows.repeat_interleave(T), slots)
        return self._slots


class Linear:
    """One or several same-input projections fused into one matmul where their formats allow it.

    `dense`, when set, is a dequantized copy of an int4 weight kept for CPU speed (see docs/formats.md);
    the int4 `Int4Weight` stays the stored format."""

    def __init__(self, weights: list[Weight], biases: list[torch.Tensor | None]):
        self.sizes = [w.shape[0] for w in weights]
        self.bias = None if all(b is None for b in biases) else torch.cat(
            [b if b is not None else torch.zeros(w.shape[0]) for w, b in zip(weights, biases)])
        self.parts: list[Weight] | None = None
        if all(isinstance(w, torch.Tensor) for w in weights):
            self.weight: Weight = torch.cat(weights) if len(weights) > 1 else weights[0]
        elif all(isinstance(w, Int4Weight) and w.perm is None and w.group_size == weights[0].group_size
                 for w in weights):
            self.weight = Int4Weight(torch.cat([w.packed for w in weights]), torch.cat([w.scales for w in weights]),
                                     torch.cat([w.mins for w in weights]), weights[0].group_size)
        else:  # mixed formats or per-layer act-order permutations: run them one by one
            self.weight, self.parts = weights[0], list(weights)
        self.dense: torch.Tensor | None = None
        self.fast: CpuQ4 | CpuInt4 | CpuHead | None = None  # a CPU kernel's form of the weight, chosen at load

    def to(self, device: torch.device, dtype: torch.dtype, cache_dense: bool, cpu_int4: bool = False) -> None:
        def move(w: Weight) -> Weight:
            return w.to(device, dtype) if isinstance(w, Int4Weight) else w.to(device, dtype).contiguous()

        self.weight = move(self.weight)
        self.parts = None if self.parts is None else [move(w) for w in self.parts]
        self.bias = None if self.bias is None else self.bias.to(device, dtype)
        if cpu_int4 and self.parts is None and isinstance(self.weight, Int4Weight):
            self.fast = to_cpu_q4(self.weight) or to_cpu_int4(self.weight)  # ours (AVX2) first, then torch's
            if self.fast is not None:
                return
        if cache_dense:
            parts = self.parts or [self.weight]
            self.dense = torch.cat([_dense(w, dtype) for w in parts])
            self.parts = None

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.fast is not None:
            return ops.linear(x, self.fast, self.bias, residual)
        if self.dense is not None:
            return ops.linear(x, self.dense, self.bias, residual)
        if self.parts is None:
            return ops.linear(x, self.weight, self.bias, residual)
        y = torch.cat([ops.linear(x, w) for w in self.parts], dim=-1)
        y = y if self.bias is None else y + self.bias
        return y if residual is None else y + residual

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """self(x), left in the kernel's output dtype (bf16 for torch's CPU int4 kernel; x's dtype otherwise)."""
        if isinstance(self.fast, CpuInt4) and self.bias is None:
            return ops.linear_raw(x, self.fast)
        return self(x)

    def normed(self, x: torch.Tensor, norm_weight: torch.Tensor, eps: float, swiglu: bool = False) -> torch.Tensor:
        """self(rms_norm(x)), or self.swiglu of it; on CUDA the norm runs inside the int4 GEMV where it can."""
        if self.fast is None and self.dense is None and self.parts is None and self.bias is None:
            return ops.norm_linear(x, norm_weight, eps, self.weight, swiglu)
        h = ops.rms_norm(x, norm_weight, eps)
        return self.swiglu(h) if swiglu else self(h)

    def swiglu(self, x: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up for a fused [gate | up] projection (fused into one kernel on CUDA where it can)."""
        if self.fast is None and self.dense is None and self.parts is None and self.bias is None:
            return ops.swiglu_linear(x, self.weight)
        g, u = self(x).chunk(2, dim=-1)
        return F.silu(g) * u


def _dense(w: Weight, dtype: torch.dtype) -> torch.Tensor:
    """Dequantize one int4 weight back to original column order (x @ W^T, no permutation needed)."""
    if isinstance(w, torch.Tensor):
        return w
    d = dequantize(w, dtype)
    if w.perm is None:
        return d
    out = torch.empty_like(d)
    out[:, w.perm] = d
    return out


class Block:
    def __init__(self, cfg: ModelConfig, t: dict[str, Weight], i: int, take):
        self.idx = i
        p = f"model.layers.{i}."
        a, m = p + "self_attn.", p + "mlp."
        H, I, D = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
        self.ln1, self.ln2 = take(p + "input_layernorm.weight", (H,)), take(p + "post_attention_layernorm.weight", (H,))
        qkv = {"q_proj": cfg.num_heads * D, "k_proj": cfg.num_kv_heads * D, "v_proj": cfg.num_kv_heads * D}
        self.qkv = Linear([take(a + n + ".weight", (rows, H)) for n, rows in qkv.items()],
                          [t.pop(a + n + ".bias", None) for n in qkv])
        self.o = Linear([take(a + "o_proj.weight", (H, cfg.num_heads * D))], [t.pop(a + "o_proj.bias", None)])
        self.gate_up = Linear([take(m + "gate_proj.weight", (I, H)), take(m + "up_proj.weight", (I, H))], [None, None])
        self.down = Linear([take(m + "down_proj.weight", (H, I))], [None])
        self.q_norm = take(a + "q_norm.weight", (D,)) if cfg.qk_norm else None
        self.k_norm = take(a + "k_norm.weight", (D,)) if cfg.qk_norm else None
        self.nh, self.nkv, self.hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.eps, self.rs, self.scale = cfg.rms_norm_eps, cfg.residual_scale, cfg.head_dim ** -0.5
        self.cpu_step: LayerStep | None = None  # set by Transformer.to in the fast CPU mode (engine/cpu_q4.py)

    def linears(self) -> list[Linear]:
        return [self.qkv, self.o, self.gate_up, self.down]

    def __call__(self, x: torch.Tensor, ctx: StepContext, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
        if ops.kernels_on(x) and ctx.attn is None:
            return self._fused(x, ctx, kc, vc)
        if self.cpu_step is not None and self.cpu_step.takes(x, ctx):  # fast CPU mode: the whole layer in C
            return self.cpu_step(x, ctx, kc, vc)
        B, T, _ = x.shape  # x: [B, T, H]
        h = ops.rms_norm(x, self.ln1, self.eps)
        # projections come back in their kernel's dtype (bf16 from the CPU int4 kernel): the next op promotes
        # them to the residual's dtype for free instead of a separate conversion
        qkv = self.qkv.raw(h)
        qk, v = qkv.split([(self.nh + self.nkv) * self.hd, self.nkv * self.hd], dim=-1)
        qk, v = qk.view(B, T, self.nh + self.nkv, self.hd), v.view(B, T, self.nkv, self.hd)
        if self.q_norm is None:  # q and k rotated together: one pass over the heads instead of two
            q_raw = k_raw = None
            if ctx.attn is not None:  # attention backends also read q and k before rotary
                q_raw, k_raw = qk[:, :, :self.nh].to(x.dtype), qk[:, :, self.nh:].to(x.dtype)
            qk = ops.rotary_qk(qk, ctx.cos, ctx.sin_signed())
            q, k = qk[:, :, :self.nh], qk[:, :, self.nh:]
        else:
            q, k = ops.rms_norm(qk[:, :, :self.nh], self.q_norm, self.eps), \
                ops.rms_norm(qk[:, :, self.nh:], self.k_norm, self.eps)
            q_raw, k_raw = q, k
            q, k = ops.apply_rotary(q, k, ctx.cos, ctx.sin)
        if ctx.paged is not None:
            o = self._paged_attention(q, k, v, ctx.paged, kc, vc)
        else:
            o = self._row_attention(q, k, v, ctx, kc, vc, q_raw, k_raw)
        o = self.o.raw(o.transpose(1, 2).reshape(B, T, self.nh * self.hd))
        x = x + (o if self.rs == 1.0 else o.to(x.dtype) * self.rs)
        g, u = self.gate_up.raw(ops.rms_norm(x, self.ln2, self.eps)).chunk(2, dim=-1)
        d = self.down.raw(F.silu(g) * u)  # bf16 in, bf16 out on the int4 kernel: no round trip through fp32
        return x + (d if self.rs == 1.0 else d.to(x.dtype) * self.rs)

    def _paged_attention(self, q, k, v, p, kc, vc) -> torch.Tensor:
        """Write this step's K/V [B, T, KVH, D] through the block tables into the pool [blocks, block_size, KVH, D],
        then attend each row's own slots, gathered in order -> o [B, H, T, D]."""
        B, T = q.shape[:2]
        kf, vf = kc.view(-1, self.nkv, self.hd), vc.view(-1, self.nkv, self.hd)  # [slots, KVH, D]
        kf[p.slot_mapping] = k.reshape(B * T, self.nkv, self.hd).to(kf.dtype)
        vf[p.slot_mapping] = v.reshape(B * T, self.nkv, self.hd).to(vf.dtype)
        gather, mask = p.reads()
        kv, vv = kf[gather].transpose(1, 2), vf[gather].transpose(1, 2)  # [B, KVH, L, D]
        return ops.attention(q.transpose(1, 2), kv, vv, mask, False, self.scale)

    def _fused_paged_attention(self, q, k, v, ctx: StepContext, kc, vc) -> torch.Tensor:
        """_fused's attention over the paged pool (kc, vc [blocks, block_size, KVH, D]) -> o [B, T, H * D]. The
        rotary kernel writes K/V through the slot mapping into the pool seen as one cache row of all its slots
        ([1, KVH, slots, D], a strided view: the kernel reads strides); a decode step then runs flash-decoding
        through the block tables, a prompt chunk SDPA over its row's slots gathered in order."""
        B, T = q.shape[:2]
        p = ctx.paged
        as_row = lambda c: c.view(-1, self.nkv, self.hd).transpose(0, 1)[None]  # noqa: E731
        rows, slots = p.kernel_slots()
        q = ops.rotary_to_cache(q, k, v, ctx.cos, ctx.sin, as_row(kc), as_row(vc), rows, slots)
        if T == 1 and p.lengths is not None and ops.paged_decode_supported(self.hd, p.block_size):
            o = ops.paged_decode_attention(q[:, 0], kc, vc, p.tables, p.lengths, self.scale)
            return o.reshape(B, T, self.nh * self.hd)
        gather, mask = p.reads()
        kf, vf = kc.view(-1, self.nkv, self.hd), vc.view(-1, self.nkv, self.hd)
        o = ops.attention(q.transpose(1, 2), kf[gather].transpose(1, 2), vf[gather].transpose(1, 2), mask, False,
                          self.scale)
        return o.transpose(1, 2).reshape(B, T, self.nh * self.hd)

    def _row_attention(self, q, k, v, ctx: StepContext, kc, vc, q_raw, k_raw) -> torch.Tensor:
        """Write K/V into the contiguous cache rows and attend [0, kv_len) of them -> o [B, H, T, D]."""
        B, T = q.shape[:2]
        kc, vc = kc[ctx.rows], vc[ctx.rows]  # [B, KVH, S, D] views of the static cache
        if ctx.pos is None:
            kc[:, :, ctx.start:ctx.start + T] = k.transpose(1, 2)
            vc[:, :, ctx.start:ctx.start + T] = v.transpose(1, 2)
        else:  # batched decode: each row writes at its own position
            rows = torch.arange(B, device=q.device)
            kc[rows, :, ctx.pos] = k[:, 0]
            vc[rows, :, ctx.pos] = v[:, 0].to(vc.dtype)
        kv, vv = kc[:, :, :ctx.kv_len], vc[:, :, :ctx.kv_len]
        if ctx.attn is not None:
            return ctx.attn(self.idx, q.transpose(1, 2), kv, vv, ctx, q_raw, k_raw)
        return ops.attention(q.transpose(1, 2), kv, vv, ctx.mask, ctx.causal, self.scale, ctx.lengths)

    def _fused(self, x: torch.Tensor, ctx: StepContext, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
        """The CUDA path, same math as __call__ in fewer kernels: the norms run inside the next GEMV (one token,
        int4), rotary writes K/V straight into the cache, the o and down projections add the residual in their
        epilogue, SwiGLU runs in gate_up's epilogue, and a decode step's rotary, cache write and attention are one
        kernel: 5 kernels a layer for an int4 decode step."""
        B, T, _ = x.shape
        qkv = self.qkv.normed(x, self.ln1, self.eps)
        q, k, v = qkv.split([self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], dim=-1)
        q, k, v = q.view(B, T, self.nh, self.hd), k.view(B, T, self.nkv, self.hd), v.view(B, T, self.nkv, self.hd)
        if self.q_norm is not None:
            q, k = ops.rms_norm(q, self.q_norm, self.eps), ops.rms_norm(k, self.k_norm, self.eps)
        if ctx.paged is not None:
            o = self._fused_paged_attention(q, k, v, ctx, kc, vc)
        elif T == 1 and _attends_to_own_position(ctx):  # decode: rotary, cache write and attention in one kernel
            rows, slots = ctx.slots(B, T, x.device)
            o = ops.decode_attention_step(q[:, 0], k[:, 0], v[:, 0], ctx.cos[:, 0], ctx.sin[:, 0], kc, vc, rows,
                                          slots, self.scale, ctx.kv_len).reshape(B, T, self.nh * self.hd)
        else:
            rows, slots = ctx.slots(B, T, x.device)
            q = ops.rotary_to_cache(q, k, v, ctx.cos, ctx.sin, kc, vc, rows, slots)
            kv, vv = kc[ctx.rows, :, :ctx.kv_len], vc[ctx.rows, :, :ctx.kv_len]
            o = ops.attention(q.transpose(1, 2), kv, vv, ctx.mask, ctx.causal, self.scale, ctx.lengths)
            o = o.transpose(1, 2).reshape(B, T, self.nh * self.hd)
        folded = self._residual_folded()
        if folded is not None:  # the residual add (and MiniCPM's residual scale) inside the GEMVs
            o_proj, down = folded
            x = o_proj(o, residual=x)
            return down(self.gate_up.normed(x, self.ln2, self.eps, swiglu=True), residual=x)
        x = x + self.o(o) * self.rs
        a = self.gate_up.normed(x, self.ln2, self.eps, swiglu=True)
        return x + self.down(a) * self.rs

    def _residual_folded(self) -> tuple[Linear, Linear] | None:
        """(o, down) whose outputs are already scaled by the residual scale: themselves when it is 1, else int4
        copies with it folded into the group scales and mins (rs (s q + m) = (rs s) q + rs m; codes shared),
        made on the first CUDA call. Saves MiniCPM two kernels a layer. None when a weight is not plain int4."""
        if self.rs == 1.0:
            return self.o, self.down
        if not hasattr(self, "_folded"):
            plain = all(lin.parts is None and lin.bias is None and lin.dense is None and lin.fast is None
                        and isinstance(lin.weight, Int4Weight) and lin.weight.perm is None
                        for lin in (self.o, self.down))
            self._folded = tuple(_scaled_int4(lin, self.rs) for lin in (self.o, self.down)) if plain else None
        return self._folded


def _scaled_int4(lin: Linear, factor: float) -> Linear:
    out = copy.copy(lin)
    w = lin.weight
    out.weight = Int4Weight(w.packed, w.scales * factor, w.mins * factor, w.group_size)
    return out


def _pack_decode_layers(model: "Transformer"):
    """Every layer's int4 weights stacked in the fused decode kernel's layout, or None when a layer does not
    qualify (q/k norms, biases, act-order, split or CPU-side weights, mixed group sizes, an odd head size). The
    per-op int4 kernels' packs of the same weights become views into the stack (int4_matmul caches them on the
    weight under these keys), so the codes are held once."""
    from engine.kernels.fused_decode import DecodeLayers  # imports Triton: only on the CUDA path

    lins: list[tuple[Linear, Linear, Linear, Linear]] = []
    for b in model.blocks:
        folded = b._residual_folded()
        if b.q_norm is not None or folded is None:
            return None
        quad = (b.qkv, folded[0], b.gate_up, folded[1])
        if not all(lin.parts is None and lin.bias is None and lin.dense is None and lin.fast is None
                   and isinstance(lin.weight, Int4Weight) and DecodeLayers.supports(lin.weight) for lin in quad):
            return None
        lins.append(quad)
    first = model.blocks[0]
    half = first.hd // 2
    groups = {lin.weight.group_size for quad in lins for lin in quad}
    if len(groups) != 1 or first.hd % 2 or half & (half - 1) or half < 16:
        return None
    w = DecodeLayers.pack(*([quad[j].weight for quad in lins] for j in range(4)), [b.ln1 for b in model.blocks],
                          [b.ln2 for b in model.blocks], first.nh, first.nkv, first.hd, first.eps, first.scale)
    for i, (qkv, o, gate_up, down) in enumerate(lins):
        qkv.weight.__dict__["_kernel_pack"] = w.qkv.layer(i)
        o.weight.__dict__["_kernel_pack"] = w.o.layer(i)
        gate_up.weight.__dict__["_kernel_pack_swiglu"] = w.gate_up.layer(i)
        down.weight.__dict__["_kernel_pack"] = w.down.layer(i)
    return w


def _attends_to_own_position(ctx: StepContext) -> bool:
    """Whether a one-token step attends to exactly its row's cache [0, position]: per-row lengths (pos + 1, the
    batched and graph decode) or a plain step at `start` over kv_len = start + 1. A mask without lengths (a
    tree verify) does not qualify."""
    if ctx.lengths is not None:
        return True
    return ctx.mask is None and ctx.pos is None and ctx.start is not None and ctx.kv_len == ctx.start + 1


class Transformer:
    """Weights by HF name in, logits out. `tensors` is consumed; leftovers are reported as an error."""

    def __init__(self, cfg: ModelConfig, tensors: dict[str, Weight], source: str):
        self.cfg = cfg

        def take(name: str, shape: tuple[int, ...]) -> Weight:
            w = tensors.pop(name, None)
            if w is None:
                raise EngineError(f"{source}: missing tensor {name!r}")
            if tuple(w.shape) != shape:
                raise EngineError(f"{source}: tensor {name!r} has shape {tuple(w.shape)}, expected {shape} "
                                  "from the config")
            return w

        H = cfg.hidden_size
        self.embed = take("model.embed_tokens.weight", (cfg.vocab_size, H))
        self.blocks = [Block(cfg, tensors, i, take) for i in range(cfg.num_layers)]
        self.norm = take("model.norm.weight", (H,))
        # MiniCPM and tied Llamas reuse the embedding; a tied checkpoint that still writes lm_head is ignored
        self.tied = cfg.tie_word_embeddings
        if self.tied:
            tensors.pop("lm_head.weight", None)
            self.head = Linear([self.embed], [None])
        else:
            if "lm_head.weight" not in tensors:
                raise EngineError(f"{source}: missing tensor 'lm_head.weight' (the config says the head is untied)")
            self.head = Linear([take("lm_head.weight", (cfg.vocab_size, H))], [None])
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def to(self, device: torch.device, dtype: torch.dtype, cache_dense: bool, cpu_int4: bool = False
           ) -> "Transformer":
        self.device, self.dtype = device, dtype
        if isinstance(self.embed, Int4Weight):  # an int4 embedding table is gathered as dense rows
            self.embed = _dense(self.embed, torch.float32)
        self.embed = self.embed.to(device, dtype)
        self.norm = self.norm.to(device, dtype)
        scratch: dict = {}  # the C layers' working buffers, one set for all layers
        for b in self.blocks:
            b.ln1, b.ln2 = b.ln1.to(device, dtype), b.ln2.to(device, dtype)
            if b.q_norm is not None:
                b.q_norm, b.k_norm = b.q_norm.to(device, dtype), b.k_norm.to(device, dtype)
            for lin in b.linears():
                lin.to(device, dtype, cache_dense, cpu_int4)
            b.cpu_step = LayerStep.build(b, scratch) if cpu_int4 else None
        if self.tied:  # one matrix in memory for both ends
            self.head.weight = self.embed
        else:
            self.head.to(device, dtype, cache_dense)
        if cpu_int4:  # fast CPU mode: int8 ranking + exact fp32 top rows (engine/cpu_head.py, docs/cpu_engine.md)
            w = self.head.dense if self.head.dense is not None else self.head.weight
            if isinstance(w, torch.Tensor) and w.dtype == torch.float32 and self.head.bias is None:
                self.head.fast = to_cpu_head(w)
        return self

    def hidden(self, tokens: torch.Tensor, ctx: StepContext, cache, last_only: bool = True) -> torch.Tensor:
        """tokens int64 [B, T] -> hidden states after the final norm, [B, 1, H] (last position) or [B, T, H].
        These are the features an Eagle draft head reads (the base model's post-final-norm output)."""
        x = F.embedding(tokens, self.embed)  # [B, T, H]
        if self.cfg.scale_emb != 1.0:
            x = x * self.cfg.scale_emb
        return self.layers(x, ctx, cache, last_only)

    def layers(self, x: torch.Tensor, ctx: StepContext, cache, last_only: bool = True) -> torch.Tensor:
        """hidden() from the scaled embeddings x [B, T, H] on (the CUDA-graph decode step writes them with its
        input kernel, engine/kernels/decode_inputs.py). A one-token CUDA int4 decode step runs every layer in one
        persistent kernel (engine/kernels/fused_decode.py) where it can, and then updates x in place."""
        packed = self._decode_layers(x, ctx)
        if packed is not None:
            rows, slots = ctx.slots(1, 1, x.device)
            ops.decode_layers(x[:, 0], packed, ctx.cos[:, 0], ctx.sin[:, 0], cache.k, cache.v, rows, slots,
                              ctx.kv_len)
        else:
            for i, block in enumerate(self.blocks):
                x = block(x, ctx, cache.k[i], cache.v[i])
        if last_only:
            x = x[:, -1:]
        return ops.rms_norm(x, self.norm, self.cfg.rms_norm_eps)

    def _decode_layers(self, x: torch.Tensor, ctx: StepContext):
        """The stacked weights of the fused decode-layers kernel when this step can take it: a one-token, one-row
        CUDA decode step with per-row lengths on the device (the graph decode), no attention backend, every layer
        plain int4 (engine/kernels/fused_decode.py), x contiguous, and CPM_FUSED_DECODE=1. Else None.
        Off by default: on the H200 the step measured slower than the per-op kernels (docs/kernels.md)."""
        if (not ops.kernels_on(x) or x.shape[:2] != (1, 1) or ctx.attn is not None or ctx.lengths is None
                or not x.is_contiguous() or os.environ.get("CPM_FUSED_DECODE", "0") != "1"):
            return None
        if not hasattr(self, "_decode_pack"):
            self._decode_pack = _pack_decode_layers(self)
        return self._decode_pack

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Post-norm hidden states [..., H] -> float32 logits [..., V] (MiniCPM's logit scale applied)."""
        return self.head_out(h).float()

    def head_out(self, h: torch.Tensor) -> torch.Tensor:
        """logits(h) in the head's output dtype (the CUDA-graph decode step casts them inside its argmax)."""
        if self.cfg.logit_scale != 1.0:
            h = h * self.cfg.logit_scale
        return self.head(h)

    def __call__(self, tokens: torch.Tensor, ctx: StepContext, cache, last_only: bool = True) -> torch.Tensor:
        """tokens int64 [B, T] -> logits float32 [B, V] (last position) or [B, T, V]."""
        logits = self.logits(self.hidden(tokens, ctx, cache, last_only))
        return logits[:, -1] if last_only else logits
