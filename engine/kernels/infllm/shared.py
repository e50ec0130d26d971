"""The InfLLM v2 kernels' shared pieces: the `@triton.jit` dot / row load / online-softmax step, the flash-decoding
merge of split partials, the grid barrier of the one-launch decode stage 1 and its counter, the SM count.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from engine.kernels import pdl
from engine.kernels.decode_attention import online_softmax


def _interp() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _dot(a, b, F32_DOT: tl.constexpr):
    """a @ b on tensor cores in b's dtype (bf16), or exact fp32 (fp32 models; the CPU interpreter, whose bf16
    tl.dot is wrong)."""
    if F32_DOT:
        r = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        r = tl.dot(a.to(b.dtype), b)
    return r


@triton.jit
def _load_rows(q_ptr, b, heads, t, valid, sq_b, sq_h, sq_t, D: tl.constexpr):
    """Query rows [R, D]: row r is query head heads[r] of token t[r] of batch row b."""
    rd = tl.arange(0, D)
    return tl.load(q_ptr + b * sq_b + heads[:, None] * sq_h + t[:, None] * sq_t + rd[None, :], mask=valid[:, None],
                   other=0.0)


@triton.jit
def _softmax_step(q, k, v, ok, m_i, l_i, acc, qk_scale, F32_DOT: tl.constexpr):
    """One key tile of an online softmax (log2 units): q [R, D], k/v [N, D], ok [R, N] which keys count.
    Rows that have seen no key yet keep zero mass."""
    qk = tl.where(ok, _dot(q, tl.trans(k), F32_DOT) * qk_scale, float("-inf"))
    pr, alpha, m_i, l_i = online_softmax(qk, m_i, l_i)
    return m_i, l_i, acc * alpha[:, None] + _dot(pr, v, F32_DOT)


@triton.jit
def _merge_kernel(o_ptr, lse_ptr, out_ptr, D: tl.constexpr, NSPLIT: tl.constexpr, PDL: tl.constexpr = False):
    """Program per (token, head) row: weight its splits' partial outputs [NSPLIT, D] by exp2(lse - max), as
    flash-decoding does. Splits with lse -inf (nothing attended) count 0 and are not read; every row has its
    own position selected, so some split is finite."""
    row = tl.program_id(0)
    pdl.wait(PDL)
    pdl.launch_dependents(PDL)  # a small grid: let the next kernel start launching
    rs, rd = tl.arange(0, NSPLIT), tl.arange(0, D)
    lse = tl.load(lse_ptr + row * NSPLIT + rs)
    live = lse > float("-inf")
    w = tl.where(live, tl.exp2(lse - tl.max(lse, axis=0)), 0.0)
    o = tl.load(o_ptr + (row * NSPLIT + rs)[:, None] * D + rd[None, :], mask=live[:, None], other=0.0)
    out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
    tl.store(out_ptr + row * D + rd, out.to(out_ptr.dtype.element_ty))


BAR_STEP = tl.constexpr(1 << 20)  # > any grid's program count


@triton.jit
def _grid_sync(bar_ptr, n_prog):
    """Every program of the launch waits here until all have arrived. bar_ptr is an int64 counter that only
    grows: each launch starts at a multiple of BAR_STEP and its last arrival lifts it to the next multiple, so
    launches of different grid sizes (batch buckets) share one counter and nothing is ever reset. Needs every
    program resident (grid <= SM count, checked by the caller)."""
    tl.debug_barrier()  # the program's stores come before its arrival
    old = tl.atomic_add(bar_ptr, 1, sem="acq_rel")
    base = old // BAR_STEP * BAR_STEP
    if old - base == n_prog - 1:  # the last to arrive releases the launch
        tl.atomic_add(bar_ptr, -(n_prog - BAR_STEP), sem="acq_rel")  # tensor first: the interpreter needs it
    cur = old + 1
    while cur < base + BAR_STEP:
        cur = tl.atomic_add(bar_ptr, 0, sem="acquire")
    tl.debug_barrier()


_BARRIERS: dict = {}


def _barrier(device: torch.device) -> torch.Tensor:
    """The grid-barrier counter of a device (allocated on first use, which is outside any graph capture:
    the kernels compile on a warm-up call first)."""
    key = str(device)
    if key not in _BARRIERS:
        _BARRIERS[key] = torch.zeros(1, dtype=torch.int64, device=device)
    return _BARRIERS[key]


def _sm_count(device: torch.device) -> int:
    if _interp() or torch.device(device).type != "cuda":
        return 8
    return torch.cuda.get_device_properties(device).multi_processor_count


def _merge(part: torch.Tensor, lse: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    bsz, h, _, d = q.shape
    on = pdl.enabled(q.device)
    out = torch.empty(bsz, h, 1, d, dtype=q.dtype, device=q.device)
    _merge_kernel[(bsz * h,)](part, lse, out, D=d, NSPLIT=part.shape[1], PDL=on, **pdl.launch_kwargs(on))
    return out
