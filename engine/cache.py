"""The KV caches: the paged pool the scheduler serves every plain request from, and the contiguous rows (max_batch x
max_seq_len) that CUDA graphs, speculative verification and attention backends read (docs/decisions.md)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.config import ModelConfig


class KVCache:
    """k, v: [num_layers, max_batch, num_kv_heads, max_seq_len, head_dim]. Rows are written in place by the
    layers (see model.Block); nothing is allocated in the decode loop."""

    def __init__(self, cfg: ModelConfig, max_batch: int, max_seq_len: int, device: torch.device,
                 dtype: torch.dtype):
        shape = (cfg.num_layers, max_batch, cfg.num_kv_heads, max_seq_len, cfg.head_dim)
        # zeros, not empty: masked positions still enter SDPA's weights @ V, and 0 * NaN garbage would be NaN
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_batch, self.max_seq_len = max_batch, max_seq_len

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


class PagedKVCache:
    """The paged KV pool: k, v [num_layers, num_blocks, block_size, num_kv_heads, head_dim], allocated once at
    load. A sequence owns a list of blocks (its block table, engine/block_manager.py); slot s of the sequence
    lies in block table[s // block_size] at offset s % block_size. Slot-major blocks keep one token's K/V for all
    heads together, so a step's writes are one index_put per layer and the C layer reads a slot with one offset."""

    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, device: torch.device, dtype: torch.dtype):
        # Two blocks more than the block manager hands out: one kept at zero, the slot the PyTorch attention's
        # padded gathers read (padding must be finite: a masked key still enters weights @ V, and 0 * NaN is NaN),
        # and one that a CUDA-graph bucket's padding rows write to and nothing reads. The rest is left
        # uninitialised (nothing reads a slot before its sequence wrote it), so on CPU the pages of blocks never
        # used are never touched and cost no resident memory.
        shape = (cfg.num_layers, num_blocks + 2, block_size, cfg.num_kv_heads, cfg.head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.k[:, num_blocks].zero_()
        self.v[:, num_blocks].zero_()
        self.num_blocks, self.block_size = num_blocks, block_size
        self.pad_slot = num_blocks * block_size
        self.trash_slot = (num_blocks + 1) * block_size

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    @property
    def bytes_per_token(self) -> int:
        return self.nbytes // ((self.num_blocks + 2) * self.block_size)


@dataclass(kw_only=True)
class PagedStep:
    """What one model call over the paged pool needs: B rows (one sequence each) of T tokens, row b's tokens at
    slots start_b .. start_b + T - 1 of its sequence. Built by Runner.run_paged."""
    tables: torch.Tensor  # int32 [B, max_blocks]: each row's block table, padded with 0 (never read)
    starts: torch.Tensor  # int64 [B]: each row's first slot this step
    token_pos: torch.Tensor  # int64 [B * T]: each token's slot in its sequence (its position)
    token_seq: torch.Tensor  # int64 [B * T]: each token's row
    slot_mapping: torch.Tensor  # int64 [B * T]: each token's slot in the flattened pool, where its K/V go
    block_size: int
    pad_slot: int  # a flattened pool slot that always holds zeros (PagedKVCache.pad_slot)
    max_len: int  # the longest sequence the engine allows (the C layer's score scratch)
    # int32 [B]: each row's length after this step (a decode step, T == 1): the paged decode kernel reads it on
    # the device, so a CUDA graph serves every step; 0 for a graph bucket's padding row
    lengths: torch.Tensor | None = None
    _reads: tuple | None = field(default=None, repr=False)
    _kernel_slots: tuple | None = field(default=None, repr=False)

    def kernel_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, slots) int32 [B * T] for the CUDA kernels that write a row cache (ops.rotary_to_cache), aimed at
        the pool seen as one row of all its slots (Block._fused): row 0, slot = slot_mapping. Once a step."""
        if self._kernel_slots is None:
            slots = self.slot_mapping.to(torch.int32).contiguous()
            self._kernel_slots = (torch.zeros_like(slots), slots)
        return self._kernel_slots

    def reads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gather int64 [B, L]: the flattened pool slots row b attends, in order, padded with pad_slot; mask bool
        [B, 1, T, L]: causal within each row's own length) for the PyTorch attention; computed once a step, and
        only when a layer runs in PyTorch (the C layer reads the block tables itself)."""
        if self._reads is None:
            B, T = self.tables.shape[0], len(self.token_pos) // self.tables.shape[0]
            dev, bs = self.tables.device, self.block_size
            ends = self.starts + T  # [B]
            L = int(ends.max())
            pos = torch.arange(L, device=dev)
            blocks = self.tables.long().gather(1, (pos // bs).clamp(max=self.tables.shape[1] - 1).expand(B, L))
            gather = torch.where(pos[None] < ends[:, None], blocks * bs + pos % bs, self.pad_slot)
            q_pos = self.starts[:, None] + torch.arange(T, device=dev)  # [B, T]
            mask = pos[None, None, :] <= q_pos[:, :, None]  # [B, T, L]
            self._reads = (gather, mask[:, None])
        return self._reads
