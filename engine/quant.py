"""The engine's one packed int4 layout, shared by GPTQ and GGUF Q4 groups (see docs/formats.md).

    packed  uint8 [out, in // 2]        two 4-bit codes per byte: low nibble = even input column, high = odd
    scales  float [out, in // group]    w[o, i] = code[o, i] * scales[o, i // group] + mins[o, i // group]
    mins    float [out, in // group]
    perm    int64 [in] or None          act-order (GPTQ desc_act): input columns were permuted at load time so
                                        that groups are contiguous; the layer computes x[..., perm] @ W^T

One affine form covers every source: GPTQ (code - zero) * s  -> scales=s, mins=-zero*s; GGUF Q4_0 (code-8)*d ->
scales=d, mins=-8d; Q4_1 code*d + m -> scales=d, mins=m; Q4_K sub-blocks -> scales=d*sc, mins=-dmin*m.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Int4Weight:
    packed: torch.Tensor  # uint8 [out, in // 2]
    scales: torch.Tensor  # [out, in // group_size]
    mins: torch.Tensor  # [out, in // group_size]
    group_size: int
    perm: torch.Tensor | None = None  # int64 [in]

    @property
    def shape(self) -> tuple[int, int]:
        return self.packed.shape[0], self.packed.shape[1] * 2

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Int4Weight":
        cast = (lambda t: t.to(device, dtype)) if dtype is not None else (lambda t: t.to(device))
        return Int4Weight(self.packed.to(device), cast(self.scales), cast(self.mins), self.group_size,
                          None if self.perm is None else self.perm.to(device))


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """codes: integer [out, in] in 0..15 -> uint8 [out, in // 2] (low nibble = even column)."""
    c = codes.to(torch.uint8)
    return c[:, 0::2] | (c[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [out, in // 2] -> uint8 codes [out, in]."""
    out = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.uint8, device=packed.device)
    out[:, 0::2] = packed & 0xF
    out[:, 1::2] = packed >> 4
    return out


def dequantize(w: Int4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dense [out, in] weight in the permuted column order (pair it with x[..., w.perm])."""
    codes = unpack_int4(w.packed).to(dtype)
    n_out, n_in = codes.shape
    g = codes.view(n_out, n_in // w.group_size, w.group_size)
    return (g * w.scales.to(dtype)[..., None] + w.mins.to(dtype)[..., None]).view(n_out, n_in)


def int4_linear_ref(x: torch.Tensor, w: Int4Weight) -> torch.Tensor:
    """Reference w4a16 linear: x [..., in] -> [..., out], dequantizing this one layer on the fly."""
    if w.perm is not None:
        x = x[..., w.perm]
    return x @ dequantize(w, x.dtype).t()
