"""The CPU output head: an int8 copy of the head ranks the vocabulary, exact fp32 rows score the top.

The fp32 head of a small model is the biggest read of a CPU decode step (SmolLM2-135M: 49152 x 576 fp32 =
113 MB a token, more than all its int4 layers together). Here an int8 copy (per-row scale, 4x fewer bytes) gives
approximate logits with a proven error bound per row; every row whose interval reaches within MARGIN of the top
is then recomputed from the fp32 weight. So every token whose exact logit is within MARGIN of the maximum gets
its exact fp32 value, the argmax equals the fp32 head's, and the other entries carry the approximation (within
their bound, and below the maximum by construction).

The int8 pass runs the engine's C kernel (engine/cpu_q4.c: int16 activations, fp32 output) where it is built,
else torch's `_weight_int8pack_mm` (bf16 activations and output). One bound covers both; for row r, with h the
input, s_r the row's scale (|w - s_r q| <= s_r / 2) and a_r the approximate logit:
    |a_r - exact_r| <= s_r / 2 * |h|_1                         int8 weight
                     + max|w_r| * |h|_1 * 2^-8                  bf16 activations (2^-9, doubled for accumulation)
                     + max|w_r| * K * max|h| / 65534            int16 activations (per-32-group scale)
                     + |a_r| * 2^-8                             bf16 output
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import cpu_q4

# rows recomputed exactly: every row whose interval reaches within MARGIN of the top one's (MARGIN = 0 is what
# the argmax needs; 1 also gives sampling exact values for the tokens next to the top)
MARGIN = 1.0
# past this share of the vocabulary in exact rows (a flat distribution), one full fp32 matmul is cheaper
FULL_SHARE = 0.125
# from this many rows at once (the scheduler's batched decode) one fp32 GEMM reads the fp32 head once for all of
# them, cheaper than an int8 pass per row (SmolLM2: 113 MB once vs 28 MB a row); every logit is then exact
FULL_FROM_ROWS = 4


@dataclass
class CpuHead:
    weight: torch.Tensor  # the fp32 [V, H] head (shared with the tied embedding), for the exact rows
    q: torch.Tensor  # int8 [V, H] (columns in cpu_q4.even_odd order when `c_kernel`)
    scales: torch.Tensor  # [V]: bf16 values (stored bf16 for torch's kernel, fp32 for ours)
    half_scale: torch.Tensor  # fp32 [V]: s_r / 2
    amax: torch.Tensor  # fp32 [V]: max |w_r|
    c_kernel: bool

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


def to_cpu_head(w: torch.Tensor) -> CpuHead:
    """Quantize an fp32 head [V, H] to int8 rows (the fp32 tensor is kept, not copied)."""
    amax = w.abs().amax(dim=1).clamp_min(1e-30)
    # /126, then rounded to bf16 (what torch's kernel multiplies by): w / scale stays within int8's +-127
    scales = (amax / 126).to(torch.bfloat16)
    q = torch.round(w / scales.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    c_kernel = cpu_q4.available() and w.shape[1] % 32 == 0
    if c_kernel:
        q, kept = cpu_q4.even_odd(q), scales.float()
    else:
        kept = scales
    return CpuHead(w, q, kept, scales.float() / 2, amax, c_kernel)


def cpu_head_logits(h: torch.Tensor, head: CpuHead) -> torch.Tensor:
    """h [..., H] float32 -> float32 logits [..., V]: exact at every row that can reach the top (see above)."""
    h2 = h.reshape(-1, h.shape[-1])
    if h2.shape[0] >= FULL_FROM_ROWS:
        return (h2 @ head.weight.t()).view(*h.shape[:-1], -1)
    if head.c_kernel:
        approx = torch.stack([cpu_q4.q8_linear(row, head.q, head.scales) for row in h2])
    else:
        approx = torch.ops.aten._weight_int8pack_mm(h2.to(torch.bfloat16), head.q, head.scales).float()  # [N, V]
    l1, mx = h2.abs().sum(-1, keepdim=True), h2.abs().amax(-1, keepdim=True)
    bound = head.half_scale * l1 + head.amax * (l1 * 2.0 ** -8 + mx * (h2.shape[-1] / 65534)) \
        + approx.abs() * 2.0 ** -8
    floor = (approx - bound).amax(dim=-1, keepdim=True)  # every row's true maximum is at least this
    for i in range(h2.shape[0]):  # decode: one row; prefill asks for the last position only
        rows = torch.nonzero(approx[i] + bound[i] >= floor[i] - MARGIN).squeeze(1)
        if len(rows) > FULL_SHARE * head.out_features:
            approx[i] = head.weight @ h2[i]
        else:
            approx[i, rows] = head.weight.index_select(0, rows) @ h2[i]
    return approx.view(*h.shape[:-1], -1)
