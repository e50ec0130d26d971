"""Prefill (chunked) and decode steps: builds each step's StepContext and calls the model.

The decode step for one sequence does no allocation beyond the op outputs: rotary rows are views of the
precomputed tables and the KV cache is written in place.
"""
from __future__ import annotations

import torch

from engine.cache import KVCache
from engine.model import StepContext, Transformer

PREFILL_CHUNK = 512  # bounds prefill attention memory at chunk x context, independent of prompt length


class Runner:
    def __init__(self, model: Transformer, cache: KVCache, cos: torch.Tensor, sin: torch.Tensor):
        self.model, self.cache, self.cos, self.sin = model, cache, cos, sin  # cos/sin: [max_seq_len, D]
        self.device = cos.device
        self._tok = torch.zeros(1, 1, dtype=torch.long, device=self.device)  # reused decode input

    def prefill(self, ids: list[int], row: int = 0) -> torch.Tensor:
        """Run the prompt through the model into cache row `row`; return float32 logits [1, V] of its last token."""
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, T]
        logits = None
        for s in range(0, len(ids), PREFILL_CHUNK):
            e = min(s + PREFILL_CHUNK, len(ids))
            mask = None
            if s > 0:  # later chunks see the whole earlier prompt plus a causal triangle over themselves
                q_pos = torch.arange(s, e, device=self.device)[:, None]
                mask = (torch.arange(e, device=self.device)[None, :] <= q_pos)[None, None]  # [1, 1, T, e]
            ctx = StepContext(slice(row, row + 1), s, None, e, mask, True, self.cos[None, s:e], self.sin[None, s:e])
            logits = self.model(tokens[:, s:e], ctx, self.cache)
        return logits

    def decode_one(self, token: int, pos: int, row: int = 0) -> torch.Tensor:
        """One token at position `pos` for one sequence -> float32 logits [1, V]."""
        self._tok.fill_(token)
        ctx = StepContext(slice(row, row + 1), pos, None, pos + 1, None, False,
                          self.cos[None, pos:pos + 1], self.sin[None, pos:pos + 1])
        return self.model(self._tok, ctx, self.cache)

    def decode_batch(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens int64 [B], pos int64 [B] (each row's own position) -> float32 logits [B, V]."""
        kv_len = int(pos.max()) + 1
        mask = (torch.arange(kv_len, device=self.device)[None, :] <= pos[:, None])[:, None, None]  # [B, 1, 1, L]
        ctx = StepContext(slice(0, len(tokens)), None, pos, kv_len, mask, False,
                          self.cos[pos][:, None], self.sin[pos][:, None])
        return self.model(tokens[:, None], ctx, self.cache)
