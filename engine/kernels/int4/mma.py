"""The small-M tensor-core kernel (`_mma_kernel`: 2 <= M < DEQUANT_MIN_M, batched decode and speculative verify
on large layers): swap AB, nibbles unpacked by PTX, scale after the dot, split-K with a last-program reduce;
docs/kernels.md "The small-M int4 kernel". Reference: `layout.int4_matmul_ref`. Launcher `_mma`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine.kernels import pdl
from engine.kernels.int4 import layout
from engine.kernels.int4.layout import PackedInt4, _column, _counters, _epilogue, _rms_rstd, interpreting


_NIBBLES_ASM = tl.constexpr("""{
.reg .b32 lo, hi;
prmt.b32 lo, $8, $9, 0x5410;
prmt.b32 hi, $8, $9, 0x7632;
lop3.b32 $0, lo, 0x000F000F, 0x43004300, 0xea;
shr.u32 $1, lo, 4;
lop3.b32 $1, $1, 0x000F000F, 0x43004300, 0xea;
shr.u32 $2, lo, 8;
lop3.b32 $2, $2, 0x000F000F, 0x43004300, 0xea;
shr.u32 $3, lo, 12;
lop3.b32 $3, $3, 0x000F000F, 0x43004300, 0xea;
lop3.b32 $4, hi, 0x000F000F, 0x43004300, 0xea;
shr.u32 $5, hi, 4;
lop3.b32 $5, $5, 0x000F000F, 0x43004300, 0xea;
shr.u32 $6, hi, 8;
lop3.b32 $6, $6, 0x000F000F, 0x43004300, 0xea;
shr.u32 $7, hi, 12;
lop3.b32 $7, $7, 0x000F000F, 0x43004300, 0xea;
}""")


@triton.jit
def _nibbles(q, ASM: tl.constexpr):
    """int32 words -> their 8 nibbles as bf16 128 + code (exact: bf16 0x4300 is 128, its last mantissa bits the
    code). ASM: two words at a time, their low (high) halves side by side by one PRMT, then one shift + LOP3
    per nibble pair: ~1 instruction a code. The plain form (the interpreter's) sets the fp32 bits instead."""
    if ASM:
        v0, v1, v2, v3, v4, v5, v6, v7 = tl.inline_asm_elementwise(
            _NIBBLES_ASM, "=r,=r,=r,=r,=r,=r,=r,=r,r,r", [q], dtype=(tl.bfloat16,) * 8, is_pure=True, pack=2)
    else:
        v0, v1, v2, v3 = _nib(q, 0), _nib(q, 1), _nib(q, 2), _nib(q, 3)
        v4, v5, v6, v7 = _nib(q, 4), _nib(q, 5), _nib(q, 6), _nib(q, 7)
    return v0, v1, v2, v3, v4, v5, v6, v7


@triton.jit
def _nib(q, J: tl.constexpr):
    if J <= 4:
        t = q << (16 - 4 * J)
    else:
        t = q >> (4 * J - 16)
    return ((t & 0xF0000) | 0x43000000).to(tl.float32, bitcast=True).to(tl.bfloat16)


def _mma_configs():
    if interpreting():
        return [triton.Config({"BN": 32, "SPLIT": 2, "STAGES": 1}, num_warps=4)]
    return [triton.Config({"BN": bn, "SPLIT": sp, "STAGES": st}, num_warps=w)
            for bn, sp, st, w in [(64, 2, 3, 4), (64, 4, 3, 4), (64, 8, 3, 4), (128, 1, 3, 4), (128, 2, 3, 4),
                                  (128, 4, 3, 4), (128, 2, 4, 8), (256, 1, 3, 8),
                                  # small layers: no split-K (no partials, no reduce), more programs
                                  (32, 1, 2, 4), (64, 1, 2, 4), (32, 2, 2, 4)]]


@triton.jit
def _mma_weights(q_ptr, s_ptr, m_ptr, t, n0, N, K, G: tl.constexpr, BN: tl.constexpr, EVEN: tl.constexpr):
    """K step t's words [BN, 16] of rows n0.. and their scales: [BN] (G = 128: applied after the dot) or
    [BN, 16] (one per word)."""
    rn = n0 + tl.arange(0, BN)
    kk = t * 16 + tl.arange(0, 16)
    wmask = kk < K // 8
    if EVEN:  # no bounds to check on the weight stream
        r4 = n0 // 4 + tl.arange(0, BN // 4)
        q3 = tl.load(q_ptr + r4[:, None, None] * (K // 8 * 4) + tl.arange(0, 4)[None, :, None]
                     + kk[None, None, :] * 4)  # [BN / 4, 4, 16]: 4 rows' words are 16 contiguous bytes
        q = tl.reshape(q3, (BN, 16))
    else:
        q = tl.load(q_ptr + (rn // 4 * (K // 8) * 4 + rn % 4)[:, None] + kk[None, :] * 4,
                    mask=(rn < N)[:, None] & wmask[None, :], other=0)
    if G == 128:
        s = tl.load(s_ptr + t * N + rn, mask=rn < N, other=0.0).to(tl.float32)
        mn = tl.load(m_ptr + t * N + rn, mask=rn < N, other=0.0).to(tl.float32) - 128.0 * s
    else:
        sm = (rn < N)[:, None] & wmask[None, :]
        grp = (kk * 8 // G)[None, :] * N + rn[:, None]
        s = tl.load(s_ptr + grp, mask=sm, other=0.0).to(tl.float32)
        mn = tl.load(m_ptr + grp, mask=sm, other=0.0).to(tl.float32) - 128.0 * s
    return q, s, mn


@triton.jit
def _dq(v, s, mn, G: tl.constexpr, F32_DOT: tl.constexpr):
    """Nibble tile v [BN, 16] (bf16 128 + code) as the MMA's A: as is for G = 128 (scaled after the dot), else
    dequantized per word (w = v s + m - 128 s; s, mn [BN, 16])."""
    # (one return at the end: Triton 3.6 compiles on past an early return in a constexpr branch)
    if G == 128:
        w = v
        if F32_DOT:
            w = v.to(tl.float32)
    else:
        w = v.to(tl.float32) * s + mn
        if not F32_DOT:
            w = w.to(tl.bfloat16)
    return w


@triton.jit
def _mma_tile(acc, q, s, mn, t, x_ptr, nw_ptr, rstd, rm, M, K, stride_xm, G: tl.constexpr, NORM: tl.constexpr,
              F32_DOT: tl.constexpr, ASM: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, EVEN: tl.constexpr):
    """acc [BN, BM] += K step t (16 words of BN rows = 128 columns) times x's rows rm: one MMA of K = 128 with
    A = [v0 | v1 | ... | v7] (column 16 j + w = nibble j of word w; a join + permute that moves no data: each
    thread's fragment is the nibbles of the words it loaded). That is input column 128 t + 16 j + w for G = 128
    (x's tile is contiguous), `_column(16 t + w, j, G)` in general (x's tile gathered in that order)."""
    vs = _nibbles(q, ASM)
    a = tl.join(tl.join(tl.join(_dq(vs[0], s, mn, G, F32_DOT), _dq(vs[1], s, mn, G, F32_DOT)),
                        tl.join(_dq(vs[2], s, mn, G, F32_DOT), _dq(vs[3], s, mn, G, F32_DOT))),
                tl.join(tl.join(_dq(vs[4], s, mn, G, F32_DOT), _dq(vs[5], s, mn, G, F32_DOT)),
                        tl.join(_dq(vs[6], s, mn, G, F32_DOT), _dq(vs[7], s, mn, G, F32_DOT))))
    a = tl.reshape(tl.permute(a, (0, 4, 3, 2, 1)), (BN, 128))
    r = tl.arange(0, 128)
    rk = t * 128 + r if G == 128 else _column(t * 16 + r % 16, r // 16, G)
    xmask = (rm < M)[None, :] if EVEN else (rm < M)[None, :] & (rk < K)[:, None]
    xt = tl.load(x_ptr + rm[None, :] * stride_xm + rk[:, None], mask=xmask, other=0.0)
    if NORM:
        xt = xt.to(tl.float32) * rstd[None, :] * tl.load(nw_ptr + rk, mask=rk < K, other=0.0)[:, None]
    if F32_DOT:  # exact fp32 products (fp32 mode; and Triton 3.9's interpreter, whose bf16 tl.dot is wrong)
        xt = xt.to(tl.float32)
        part = tl.dot(a, xt, input_precision="ieee")
    else:
        xt = xt.to(tl.bfloat16)
        part = tl.dot(a, xt)
    if G == 128:  # w x = s dot(v, x) + (m - 128 s) sum(x)
        if F32_DOT:
            xsum = tl.dot(tl.full((BN, 128), 1.0, tl.float32), xt, input_precision="ieee")
        else:
            xsum = tl.dot(tl.full((BN, 128), 1.0, tl.bfloat16), xt)  # the tile's x sums, already broadcast
        acc += part * s[:, None] + xsum * mn[:, None]
    else:
        acc += part
    return acc


@triton.autotune(configs=_mma_configs(), key=["N", "K", "BM", "G", "SWIGLU", "NORM"])
@triton.heuristics({"EVEN": lambda a: a["N"] % a["BN"] == 0 and a["K"] % 128 == 0})
@triton.jit(do_not_specialize=["M"])
def _mma_kernel(x_ptr, q_ptr, s_ptr, m_ptr, out_ptr, res_ptr, nw_ptr, ws_ptr, cnt_ptr, eps, M, N, K,
                stride_xm, stride_om, stride_rm, WS_M, WS_N, G: tl.constexpr, SWIGLU: tl.constexpr,
                RESIDUAL: tl.constexpr, NORM: tl.constexpr, F32_DOT: tl.constexpr, ASM: tl.constexpr,
                PDL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, SPLIT: tl.constexpr, STAGES: tl.constexpr,
                EVEN: tl.constexpr):
    # out^T [BN, BM] = W [BN, K] x^T [K, BM] ("swap AB": the dequantized weight is the MMA's A operand, which may
    # live in registers; the few rows of x pad only the small N side of the MMA). A K step is one 16-word tile
    # of BN rows (128 columns), one MMA of K = 128 (`_mma_tile`): the weight is unpacked elementwise, never
    # shuffled, and x's tile is loaded in the order of its columns. SPLIT programs share the K range of a tile;
    # the last to finish (an atomic count) sums the fp32 partials and runs the epilogue, so small layers fill
    # the GPU.
    # PDL: the first K step's weights are loaded before the wait; x, the workspace and counts only after it.
    pid_n, pid_k, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rn = pid_n * BN + tl.arange(0, BN)
    rm = pid_m * BM + tl.arange(0, BM)
    n_tiles = tl.cdiv(K, 128)
    per = tl.cdiv(n_tiles, SPLIT)
    t0 = pid_k * per
    t1 = tl.minimum(t0 + per, n_tiles)
    q, s, mn = _mma_weights(q_ptr, s_ptr, m_ptr, tl.minimum(t0, n_tiles - 1), pid_n * BN, N, K, G, BN, EVEN)
    pdl.wait(PDL)
    rstd = tl.full((BM,), 1.0, tl.float32)
    if NORM:
        rstd = _rms_rstd(x_ptr, rm, M, K, stride_xm, eps, BM, 256)
    acc = tl.zeros((BN, BM), tl.float32)
    if t0 < t1:  # a split past the last K step has nothing to add (its partial stays zero)
        acc = _mma_tile(acc, q, s, mn, t0, x_ptr, nw_ptr, rstd, rm, M, K, stride_xm, G, NORM, F32_DOT, ASM, BN,
                        BM, EVEN)
    for t in tl.range(t0 + 1, t1, num_stages=STAGES):
        q, s, mn = _mma_weights(q_ptr, s_ptr, m_ptr, t, pid_n * BN, N, K, G, BN, EVEN)
        acc = _mma_tile(acc, q, s, mn, t, x_ptr, nw_ptr, rstd, rm, M, K, stride_xm, G, NORM, F32_DOT, ASM, BN,
                        BM, EVEN)
    pdl.launch_dependents(PDL)
    if SPLIT > 1:
        ws = ws_ptr + rm[None, :] * WS_N + rn[:, None]
        tl.store(ws + pid_k * WS_M * WS_N, acc)
        tl.debug_barrier()  # every thread's partial is written before the count says so
        tile = cnt_ptr + pid_m * tl.num_programs(0) + pid_n
        if tl.atomic_add(tile, 1, sem="acq_rel", scope="gpu") == SPLIT - 1:  # the last of the SPLIT programs
            acc = tl.zeros((BN, BM), tl.float32)
            for i in range(SPLIT):
                acc += tl.load(ws + i * WS_M * WS_N, cache_modifier=".cg")
            tl.store(tile, 0)  # the count is ready for the next call (graph replays included)
            _epilogue(tl.trans(acc), rm, pid_n * BN, M, N, out_ptr, res_ptr, stride_om, stride_rm, BM, BN,
                      SWIGLU, RESIDUAL)
    else:
        _epilogue(tl.trans(acc), rm, pid_n * BN, M, N, out_ptr, res_ptr, stride_om, stride_rm, BM, BN, SWIGLU,
                  RESIDUAL)


def _mma(x: torch.Tensor, pw: PackedInt4, out: torch.Tensor, res: torch.Tensor | None, swiglu: bool,
         norm: tuple[torch.Tensor, float] | None, f32_dot: bool, asm: bool | None = None, **meta) -> None:
    """Launch `_mma_kernel` (autotuned unless meta gives BN, SPLIT, STAGES, num_warps)."""
    n, k = pw.shape
    m = x.shape[0]
    bm = min(64, max(16, triton.next_power_of_2(m)))
    ws_m, ws_n = triton.cdiv(m, bm) * bm, triton.cdiv(n, 16) * 16 + 256
    ws = torch.empty(8 * ws_m * ws_n, dtype=torch.float32, device=x.device)
    cnt = _counters(x.device)
    assert triton.cdiv(m, bm) * triton.cdiv(n, 16) <= cnt.numel()
    grid = lambda meta: (triton.cdiv(n, meta["BN"]), meta["SPLIT"], triton.cdiv(m, bm))  # noqa: E731
    fn = _mma_kernel.fn if meta else _mma_kernel
    on = layout.PDL_SMALL_M and pdl.enabled(x.device)
    fn[grid](x, pw.qweight, pw.scales, pw.mins, out, out if res is None else res, x if norm is None else norm[0],
             ws, cnt, 0.0 if norm is None else norm[1], m, n, k, x.stride(0), out.stride(0),
             out.stride(0) if res is None else res.stride(0), ws_m, ws_n, G=pw.group_size,
             SWIGLU=swiglu, RESIDUAL=res is not None, NORM=norm is not None, F32_DOT=f32_dot or interpreting(),
             ASM=(not interpreting()) if asm is None else asm, PDL=on, BM=bm, **meta, **pdl.launch_kwargs(on))
