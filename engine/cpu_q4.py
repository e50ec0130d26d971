"""The engine's own CPU int4 GEMV (engine/cpu_q4.c, AVX2 + FMA): int16-quantized activations against the packed
int4 weight, one exact integer dot product per 32-column group (finer than bf16 activations; see the C file).

The C file is compiled with the system C compiler at first use into a per-user cache keyed by the source's
hash (a second or two, once), and called through ctypes on the tensors' memory; no torch headers are involved.
Where there is no compiler, no AVX2 or the build fails, `available()` is False and the engine keeps torch's
CPU int4 kernel (engine/cpu_int4.py). CPM_CPU_Q4=0 turns it off.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.quant import Int4Weight

_SRC = Path(__file__).with_name("cpu_q4.c")
_lib = None  # the loaded library, False once a build failed


@dataclass
class CpuQ4:
    packed: torch.Tensor  # uint8 [N, K / 2], the engine's layout
    scales: torch.Tensor  # float32 [N, K / 32]
    mins: torch.Tensor  # float32 [N, K / 32]
    out_features: int


def _cpu_has_avx2() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


def _load():
    global _lib
    if _lib is not None:
        return _lib or None
    _lib = False
    if os.environ.get("CPM_CPU_Q4", "1") == "0" or not _cpu_has_avx2():
        return None
    src = _SRC.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cpm" / "cpu_q4"
    so = cache / f"cpu_q4_{hashlib.sha256(src).hexdigest()[:16]}.so"
    try:
        if not so.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:  # build aside, then move: concurrent first uses
                out = Path(tmp) / so.name
                subprocess.run([os.environ.get("CC", "cc"), "-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC",
                                str(_SRC), "-o", str(out)], check=True, capture_output=True, timeout=120)
                os.replace(out, so)
        lib = ctypes.CDLL(str(so))
    except (OSError, subprocess.SubprocessError):
        return None
    lib.q4_linear.restype = None
    lib.q4_linear.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_void_p]
    lib.q4_dequant.restype = None
    lib.q4_dequant.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                               ctypes.c_void_p]
    lib.q8_linear.restype = None
    lib.q8_linear.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                              ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.q4_layer_forward.restype = None
    lib.q4_layer_forward.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                     ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
    _lib = lib
    return lib


def available() -> bool:
    return _load() is not None


def to_cpu_q4(w: Int4Weight) -> CpuQ4 | None:
    """The kernel's form of an int4 weight (groups of 32; coarser groups repeated), or None where it does not
    apply (act-order permutation, a group size that is not a multiple of 32, no kernel on this machine)."""
    n, k = w.shape
    if w.perm is not None or w.group_size % 32 or k % w.group_size or not available():
        return None
    rep = w.group_size // 32
    scales = w.scales.float().repeat_interleave(rep, dim=1).contiguous()
    mins = w.mins.float().repeat_interleave(rep, dim=1).contiguous()
    return CpuQ4(w.packed.contiguous(), scales, mins, n)


# From this many rows (long prompt chunks) the weight is dequantized to fp32 once for the call and multiplied by
# torch's fp32 GEMM: 2-2.7x the int16 dot at 512-900 rows on the 2-core dev box (docs/cpu_engine.md). Below it
# (decode, batches, speculative verification of up to 64 tree tokens) the int16 dot runs, whose result for a
# token does not depend on how many tokens share the call.
DENSE_FROM_ROWS = 128


def cpu_q4_linear(x: torch.Tensor, w: CpuQ4) -> torch.Tensor:
    """x [..., K] -> float32 [..., N]."""
    lib = _load()
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.dtype != torch.float32 or not x2.is_contiguous():
        x2 = x2.float().contiguous()
    M = x2.shape[0]
    if M >= DENSE_FROM_ROWS:
        dense = torch.empty(w.out_features, K, dtype=torch.float32)
        lib.q4_dequant(w.packed.data_ptr(), w.scales.data_ptr(), w.mins.data_ptr(), w.out_features, K,
                       dense.data_ptr())
        return (x2 @ dense.t()).view(*x.shape[:-1], w.out_features)
    y = torch.empty(M, w.out_features, dtype=torch.float32)
    xq = torch.empty(M * K, dtype=torch.int16)
    sc = torch.empty(2, M * (K // 32), dtype=torch.float32)
    lib.q4_linear(x2.data_ptr(), M, K, w.packed.data_ptr(), w.scales.data_ptr(), w.mins.data_ptr(),
                  w.out_features, y.data_ptr(), xq.data_ptr(), sc[0].data_ptr(), sc[1].data_ptr())
    return y.view(*x.shape[:-1], w.out_features)


def even_odd(w: torch.Tensor) -> torch.Tensor:
    """Columns of [N, K] reordered per 32-group into the kernels' activation order (16 even, then 16 odd)."""
    n, k = w.shape
    return w.view(n, k // 32, 16, 2).transpose(2, 3).reshape(n, k).contiguous()


def q8_linear(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [K] float32 -> float32 [N]: x @ (scales[:, None] * q)^T, q int8 [N, K] stored in even_odd order."""
    lib = _load()
    K = x.shape[-1]
    x = x.float().contiguous()
    y = torch.empty(q.shape[0], dtype=torch.float32)
    xq, sc = torch.empty(K, dtype=torch.int16), torch.empty(2, K // 32)
    lib.q8_linear(x.data_ptr(), K, q.data_ptr(), scales.data_ptr(), q.shape[0], y.data_ptr(), xq.data_ptr(),
                  sc[0].data_ptr(), sc[1].data_ptr())
    return y


class _Mat(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("d", ctypes.c_void_p), ("m", ctypes.c_void_p), ("n", ctypes.c_int64),
                ("k", ctypes.c_int64)]


class _Layer(ctypes.Structure):  # mirrors Q4Layer in cpu_q4.c
    _fields_ = ([(n, _Mat) for n in ("qkv", "o", "gate_up", "down")]
                + [(n, ctypes.c_void_p) for n in ("ln1", "ln2", "k_cache", "v_cache")]
                + [(n, ctypes.c_int64) for n in ("block_size", "block_stride", "slot_stride", "head_stride")]
                + [(n, ctypes.c_int64) for n in ("hidden", "heads", "kv_heads", "head_dim", "max_len", "inter")]
                + [(n, ctypes.c_float) for n in ("eps", "scale", "residual_scale")]
                + [(n, ctypes.c_void_p) for n in ("h", "qkv_out", "att", "gu", "out", "scores", "xq", "dx", "sx")])


class LayerStep:
    """A whole decoder layer in C (q4_layer_forward) for up to MAX_TOKENS tokens: decode steps of one or many
    sequences (paged KV through their block tables), short prompt chunks, and speculative tree verification on a
    contiguous cache row. The ~60 small torch calls of model.Block.__call__ become one, and a token gets
    bit-identical results decoded alone, batched with other sequences or verified in a tree (speculation stays
    lossless, batching changes no token). Same math as the PyTorch layer in fp32 (different summation order).
    Built at load for blocks whose four linears run on this kernel, with no biases and no q/k norm; `scratch` is
    shared by the layers."""

    MAX_TOKENS = 64

    def __init__(self, block, w: list[CpuQ4], scratch: dict):
        self.block, self.w, self.shared = block, w, scratch  # w keeps the weights the struct points at alive
        self.layer: _Layer | None = None
        self.lib = _load()

    @classmethod
    def build(cls, block, scratch: dict) -> "LayerStep | None":
        lins = [block.qkv, block.o, block.gate_up, block.down]
        if not all(isinstance(lin.fast, CpuQ4) and lin.bias is None for lin in lins) or block.q_norm is not None:
            return None
        if block.ln1.dtype != torch.float32 or block.hd % 2:
            return None
        return cls(block, [lin.fast for lin in lins], scratch)

    def takes(self, x: torch.Tensor, ctx) -> bool:
        """Paged steps of at most MAX_TOKENS tokens in all; or one sequence's tokens at slots start.. of a cache
        row, dense attention: causal or ctx.mask."""
        B, T, _ = x.shape
        if B * T > self.MAX_TOKENS or ctx.attn is not None or ctx.lengths is not None or x.dtype != torch.float32:
            return False
        if ctx.paged is not None:
            return ctx.mask is None
        if B != 1 or ctx.pos is not None:
            return False
        if ctx.mask is not None:
            return ctx.mask.shape == (1, 1, T, ctx.kv_len) and ctx.mask.dtype == torch.bool
        return ctx.kv_len == ctx.start + T and (T == 1 or ctx.causal)

    def _buf(self, name: str, n: int, dtype=torch.float32) -> int:
        t = self.shared.get(name)
        if t is None or t.numel() < n:
            t = self.shared[name] = torch.empty(n, dtype=dtype)
        return t.data_ptr()

    def _struct(self, max_len: int) -> _Layer:
        """The layer's weights and scratch; the cache fields are set per call."""
        b = self.block
        mats = [_Mat(q.packed.data_ptr(), q.scales.data_ptr(), q.mins.data_ptr(), q.out_features,
                     q.packed.shape[1] * 2) for q in self.w]
        H, inter, T = b.ln1.shape[0], self.w[3].packed.shape[1] * 2, self.MAX_TOKENS
        kmax = max(H, inter, b.nh * b.hd)
        bufs = [self._buf("h", T * kmax), self._buf("qkv", T * self.w[0].out_features),
                self._buf("att", T * b.nh * b.hd), self._buf("gu", T * self.w[2].out_features),
                self._buf("out", T * H), self._buf("scores", T * b.nh * max_len),
                self._buf("xq", T * kmax, torch.int16), self._buf("dx", T * kmax // 32),
                self._buf("sx", T * kmax // 32)]
        return _Layer(*mats, b.ln1.data_ptr(), b.ln2.data_ptr(), None, None, 0, 0, 0, 0, H, b.nh, b.nkv, b.hd,
                      max_len, inter, b.eps, b.scale, b.rs, *bufs)

    def __call__(self, x: torch.Tensor, ctx, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
        """x [B, T, H] -> the layer's output (x is updated in place and returned); kc/vc: this layer's caches,
        the paged pool [blocks, block_size, KVH, D] or the rows [max_batch, KVH, S, D]."""
        B, T, _ = x.shape
        if ctx.paged is not None:
            p = ctx.paged
            max_len, kv_len, mask = p.max_len, 0, None
            base_k, base_v = kc, vc
            bs = kc.shape[1]
            geometry = (bs, kc.stride(0), kc.stride(1), kc.stride(2))
            pos, tables, seq, width = p.token_pos, p.tables, p.token_seq, p.tables.shape[1]
        else:  # one contiguous row: a single block of S slots
            base_k, base_v = kc[ctx.rows.start], vc[ctx.rows.start]  # [KVH, S, D]
            max_len = base_k.shape[1]
            geometry = (max_len, 0, base_k.stride(1), base_k.stride(0))
            pos = torch.arange(ctx.start, ctx.start + T, dtype=torch.int64)
            tables, seq, width = _ROW_TABLE, torch.zeros(T, dtype=torch.int64), 1
            mask = None if ctx.mask is None else ctx.mask.contiguous()
            kv_len = ctx.kv_len
        if self.layer is None or self.layer.max_len < max_len:
            self.layer = self._struct(max_len)
        L = self.layer
        L.k_cache, L.v_cache = base_k.data_ptr(), base_v.data_ptr()
        L.block_size, L.block_stride, L.slot_stride, L.head_stride = geometry
        x = x.contiguous()
        cos, sin = ctx.cos.contiguous(), ctx.sin.contiguous()
        self.lib.q4_layer_forward(ctypes.byref(L), x.data_ptr(), B * T, cos.data_ptr(), sin.data_ptr(),
                                  pos.data_ptr(), tables.data_ptr(), seq.data_ptr(), width,
                                  None if mask is None else mask.data_ptr(), kv_len)
        return x


_ROW_TABLE = torch.zeros(1, dtype=torch.int32)  # a contiguous row's block table: its one block at offset 0
