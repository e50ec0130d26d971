"""The static KV cache: one allocation per engine for max_batch x max_seq_len, reused by every request."""
from __future__ import annotations

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
