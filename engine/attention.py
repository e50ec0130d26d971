"""The InfLLM v2 attention backend (MiniCPM4 `sparse_config`): dense below `dense_len`, block-sparse above.

Plugged into the runner (`enable_sparse(engine)`, which sets `Runner.attn`), it is called by every layer after
that layer's K/V were written into the cache. It owns the static compressed-key cache (one window mean every
`kernel_stride` tokens, kept current on dense steps too so the switch costs nothing) and, with `use_nope`, a
pre-rotary key cache. CUDA runs the Triton kernels of engine/kernels/infllm_v2.py, CPU their references.
docs/infllm_v2.md describes the algorithm.
"""
from __future__ import annotations

import torch

from engine import ops
from engine.config import ModelConfig
from engine.errors import EngineError

MODES = ("auto", "dense", "sparse")


class SparseAttention:
    """mode: "auto" (dense while kv_len < dense_len), "dense" or "sparse" (forced). impl: "auto" (kernels on
    CUDA, references on CPU), "reference" or "kernel".

    `graph_safe` (the kernel path): a decode step (T == 1) does no host sync, allocates only op outputs and
    reads each row's length from ctx.lengths / ctx.pos on the device, so it can be captured in a CUDA graph
    over the cache's whole capacity (ctx.kv_len = max_seq_len). The dense/sparse switch of a decode step is
    then made on the device too: a row shorter than dense_len selects every block."""

    def __init__(self, cfg: ModelConfig, max_batch: int, max_seq_len: int, device: torch.device,
                 dtype: torch.dtype, mode: str = "auto", impl: str = "auto"):
        from engine.kernels.infllm_v2 import InfLLMParams  # imports Triton: only when a backend is built

        if mode not in MODES:
            raise EngineError(f"sparse attention mode must be one of {', '.join(MODES)}, got {mode!r}")
        if cfg.sparse_config is None and mode != "dense":
            raise EngineError("this model's config.json has no sparse_config: add one (see docs/infllm_v2.md) "
                              "or use mode='dense'")
        try:
            self.p = InfLLMParams.from_config(cfg.sparse_config or {})
        except (TypeError, ValueError) as e:
            raise EngineError(f"bad sparse_config: {e}") from None
        self.mode, self.scale = mode, cfg.head_dim ** -0.5
        self.kernels = impl == "kernel" or (impl == "auto" and torch.device(device).type == "cuda")
        self.graph_safe = self.kernels
        shape = (cfg.num_layers, max_batch, cfg.num_kv_heads)
        self.ck = torch.zeros(*shape, max(1, self.p.num_windows(max_seq_len)), cfg.head_dim, device=device,
                              dtype=dtype)
        self.k_nope = torch.zeros(*shape, max_seq_len, cfg.head_dim, device=device, dtype=dtype) \
            if self.p.use_nope else None
        # the decode stage-1 kernel's grid-barrier counter: one per backend, whose layers run one after another
        self.barrier = torch.zeros(1, dtype=torch.int64, device=device)

    def sparse_at(self, kv_len: int) -> bool:
        """Whether a step attending kv_len tokens runs sparse."""
        if self.mode != "auto":
            return self.mode == "sparse"
        return self.p.dense_len < 0 or kv_len >= self.p.dense_len

    def __call__(self, layer: int, q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, ctx, q_raw: torch.Tensor,
                 k_raw: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = q.shape
        if ctx.lengths is not None:
            lengths = ctx.lengths
        elif ctx.pos is not None:
            lengths = (ctx.pos + 1).to(torch.int32)
        else:
            lengths = torch.full((B,), ctx.start + T, dtype=torch.int32, device=q.device)
        keys = kc
        if self.k_nope is not None:  # stage 1 scores pre-rotary keys: keep them beside the cache
            kn = self.k_nope[layer, ctx.rows]
            if ctx.pos is None:
                kn[:, :, ctx.start:ctx.start + T] = k_raw.transpose(1, 2)
            else:
                kn[torch.arange(B, device=q.device), :, ctx.pos] = k_raw[:, 0]
            keys = kn
        ck = self.ck[layer, ctx.rows]
        q_sel = q_raw.transpose(1, 2) if self.p.use_nope else None
        if self.kernels and T == 1 and self.mode != "dense":  # decode: the switch is made on the device
            from engine.kernels.infllm_v2 import sparse_decode

            dense_len = self.p.dense_len if self.mode == "auto" else 0  # it writes the step's compressed key too
            return sparse_decode(q, kc, vc, ck, lengths, self.p, q_sel, keys, self.scale, dense_len,
                                 barrier=self.barrier)
        self._compress(keys, ck, lengths, T)
        if not self.sparse_at(ctx.kv_len):
            return ops.attention(q, kc, vc, ctx.mask, ctx.causal, self.scale, ctx.lengths)
        if self.kernels:
            from engine.kernels.infllm_v2 import infllm_v2_attention

            return infllm_v2_attention(q, kc, vc, ck, lengths, self.p, q_sel, self.scale)
        from engine.kernels.infllm_v2 import select_blocks_ref, sparse_attention_ref

        lens = [int(n) for n in lengths]
        nb = -(-kc.shape[2] // self.p.block_size)
        blocks = select_blocks_ref(q if q_sel is None else q_sel, ck, lens, nb, self.p, self.scale)
        return sparse_attention_ref(q, kc, vc, blocks, lens, self.p.block_size, self.scale)

    def _compress(self, keys: torch.Tensor, ck: torch.Tensor, lengths: torch.Tensor, T: int) -> None:
        """Write the windows completed by this step's T tokens into ck."""
        p = self.p
        if self.kernels:
            from engine.kernels.infllm_v2 import compress_keys

            compress_keys(keys, ck, lengths, T // p.kernel_stride + 2, p)
            return
        for b, n in enumerate(int(x) for x in lengths):
            lo, hi = p.num_windows(n - T), p.num_windows(n)
            for c in range(lo, hi):
                s = c * p.kernel_stride
                ck[b, :, c] = keys[b, :, s:s + p.kernel_size].float().mean(1).to(ck.dtype)


def enable_sparse(engine, mode: str = "auto", impl: str = "auto") -> SparseAttention:
    """Put an InfLLM v2 backend on the engine's runner (every later prefill/decode step uses it)."""
    backend = SparseAttention(engine.config, engine.max_batch, engine.max_seq_len, engine.device, engine.dtype,
                              mode, impl)
    engine.runner.attn = backend
    return backend
