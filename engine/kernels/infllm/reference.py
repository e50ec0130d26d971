"""InfLLM v2 (MiniCPM4's sparse attention): its parameters and the plain PyTorch references every kernel of the
family is tested against (clear, slow, exact; float32 math). docs/infllm_v2.md pins the algorithm down.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LOG2E = 1.4426950408889634
IDX_BITS = 20  # selection keys are (score bits << IDX_BITS) | (2^IDX_BITS - 1 - block): unique per block


@dataclass(frozen=True)
class InfLLMParams:
    """The checkpoint's `sparse_config` (defaults: the MiniCPM4 remote code's `.get()` defaults)."""
    kernel_size: int = 32
    kernel_stride: int = 16
    init_blocks: int = 1
    block_size: int = 64
    window_size: int = 2048
    topk: int = 64
    use_nope: bool = False
    dense_len: int = 8192

    @classmethod
    def from_config(cls, sc: dict) -> "InfLLMParams":
        known = {f: sc[f] for f in cls.__dataclass_fields__ if f in sc}
        p = cls(**known)
        if p.block_size % p.kernel_stride or p.kernel_size % p.kernel_stride:
            raise ValueError(f"sparse_config: block_size ({p.block_size}) and kernel_size ({p.kernel_size}) must be "
                             f"multiples of kernel_stride ({p.kernel_stride})")
        return p

    @property
    def local_blocks(self) -> int:
        return self.window_size // self.block_size

    def num_windows(self, n_tokens: int) -> int:
        """Complete compressed-key windows among the first n_tokens tokens."""
        return 0 if n_tokens < self.kernel_size else (n_tokens - self.kernel_size) // self.kernel_stride + 1


# ----------------------------------------------------------------------------------------------------------
# references (clear, slow, exact; float32 math)

def compress_keys_ref(k: torch.Tensor, n_tokens: int, p: InfLLMParams) -> torch.Tensor:
    """k [KVH, >= n_tokens, D] -> compressed keys [KVH, NC, D] (NC = complete windows), k's dtype."""
    nc = p.num_windows(n_tokens)
    if nc == 0:
        return k.new_zeros(k.shape[0], 0, k.shape[2])
    starts = torch.arange(nc, device=k.device) * p.kernel_stride
    idx = starts[:, None] + torch.arange(p.kernel_size, device=k.device)[None]  # [NC, KS]
    return k[:, idx].float().mean(dim=2).to(k.dtype)


def block_scores_ref(q: torch.Tensor, ck: torch.Tensor, length: int, num_blocks: int, p: InfLLMParams,
                     scale: float) -> torch.Tensor:
    """One row. q [H, T, D] (positions length-T .. length-1), ck [KVH, >= NC, D] -> float32 [KVH, T, NB]
    block scores: +inf forced, -inf for blocks past the query's own (never selectable)."""
    h, t, _ = q.shape
    kvh = ck.shape[0]
    g = h // kvh
    pos = torch.arange(length - t, length, device=q.device)
    nc = p.num_windows(length)
    logits = (q.float() @ ck[:, :nc].float().repeat_interleave(g, 0).transpose(1, 2)) * scale  # [H, T, NC]
    seen = torch.tensor([p.num_windows(int(i) + 1) for i in pos], device=q.device)  # windows ending <= i
    visible = torch.arange(nc, device=q.device)[None, :] < seen[:, None]  # [T, NC]
    probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1).nan_to_num(0.0)
    s = probs.view(kvh, g, t, nc).sum(1)  # [KVH, T, NC]: the group's heads share one score
    sp = p.block_size // p.kernel_stride
    out = torch.zeros(kvh, t, num_blocks, device=q.device)
    for b in range(num_blocks):  # max_pooling_1d: kernel sp + 1, stride sp, padding 1
        lo, hi = max(b * sp - 1, 0), min(b * sp + sp, nc)
        if hi > lo:
            out[..., b] = s[..., lo:hi].amax(-1).clamp_min(0.0)
    qb = (pos // p.block_size)[:, None]  # [T, 1]
    blk = torch.arange(num_blocks, device=q.device)[None, :]
    forced = (blk < p.init_blocks) | ((blk <= qb) & (blk + p.local_blocks >= qb))
    out = out.masked_fill(forced[None], float("inf"))
    return out.masked_fill((blk > qb)[None], float("-inf"))


def select_blocks_ref(q: torch.Tensor, ck: torch.Tensor, lengths: list[int], num_blocks: int, p: InfLLMParams,
                      scale: float | None = None) -> torch.Tensor:
    """q [B, H, T, D], ck [B, KVH, NC_cap, D] -> bool [B, KVH, T, NB]: the blocks each query token attends to.
    The top-k of the block scores; among equal scores the lower block index wins."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    out = []
    for b, n in enumerate(lengths):
        sc = block_scores_ref(q[b], ck[b], n, num_blocks, p, scale)  # [KVH, T, NB]
        k = min(p.topk, num_blocks)
        # stable descending sort = lower index first among ties
        order = torch.sort(sc, dim=-1, descending=True, stable=True).indices[..., :k]
        mask = torch.zeros_like(sc, dtype=torch.bool).scatter_(-1, order, True)
        out.append(mask & (sc > float("-inf")))
    return torch.stack(out)


def sparse_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, blocks: torch.Tensor,
                         lengths: list[int], block_size: int, scale: float | None = None) -> torch.Tensor:
    """q [B, H, T, D], k/v caches [B, KVH, S, D], blocks bool [B, KVH, T, NB] -> [B, H, T, D]:
    attention over the tokens of the selected blocks, causal."""
    bsz, h, t, d = q.shape
    kvh = k.shape[1]
    g = h // kvh
    scale = scale if scale is not None else d ** -0.5
    out = torch.empty_like(q)
    for b, n in enumerate(lengths):
        pos = torch.arange(n - t, n, device=q.device)
        tok = blocks[b].repeat_interleave(block_size, -1)[..., :n]  # [KVH, T, n]
        keep = tok & (torch.arange(n, device=q.device)[None, :] <= pos[:, None])[None]
        kk = k[b, :, :n].float().repeat_interleave(g, 0)
        vv = v[b, :, :n].float().repeat_interleave(g, 0)
        s = (q[b].float() @ kk.transpose(1, 2)) * scale  # [H, T, n]
        s = s.masked_fill(~keep.repeat_interleave(g, 0), float("-inf"))
        out[b] = (torch.softmax(s, -1) @ vv).to(q.dtype)
    return out


def idx_to_mask(idx: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Selected block indices [..., K] (-1 = none) -> bool [..., NB]."""
    mask = torch.zeros(*idx.shape[:-1], num_blocks + 1, dtype=torch.bool, device=idx.device)
    mask.scatter_(-1, torch.where(idx < 0, num_blocks, idx).long(), True)
    return mask[..., :num_blocks]
