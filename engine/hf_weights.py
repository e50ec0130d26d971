"""HF checkpoint folders -> canonical tensors: safetensors (single or sharded, bf16/fp16/fp32) and GPTQ int4.

GPTQ layout (AutoGPTQ / GPTQModel, as in MiniCPM4-0.5B-QAT-Int4-GPTQ-format; see docs/formats.md):
    qweight int32 [in / 8, out]      8 codes per int32 along the input dim, code i at bits 4*(i % 8)
    qzeros  int32 [groups, out / 8]  8 zero points per int32 along the output dim
    scales  fp16  [groups, out]
    g_idx   int32 [in]               group of each input column (sequential unless desc_act)
    w[o, i] = scales[g, o] * (q[i, o] - z[g, o]) with g = g_idx[i]; checkpoint_format "gptq" (v1) stores
    z - 1 (AutoGPTQ's historical offset), "gptq_v2" stores z itself.

BitCPM4 (openbmb/BitCPM4-0.5B, -1B) ships "fake-quantized" ternary weights: plain bf16 safetensors in which
every projection value is t * s, t in {-1, 0, 1}, s shared by a group of input columns of one row. Such a
weight is stored here as int4 codes t + 8 with scale s and min -8s: exact, 4x smaller than bf16, and run by
the same int4 kernels as GPTQ/GGUF (see docs/formats.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from engine.config import ModelConfig, StrictModel, checked, read_json
from engine.errors import EngineError
from engine.quant import Int4Weight, pack_int4


class ShardIndex(StrictModel):
    """`model.safetensors.index.json`: tensor name -> shard file, a plain file name inside the folder."""

    weight_map: dict[str, Annotated[str, Field(pattern=r"^[^/\\]+\.safetensors$")]]


def _shards(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = checked(ShardIndex, read_json(index), str(index)).weight_map
        files = sorted({directory / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise EngineError(f"{index}: shard(s) {', '.join(missing)} listed but not present in {directory}")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise EngineError(f"{directory}: no *.safetensors weights (and no model.safetensors.index.json)")
    return files


def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, torch.Tensor] = {}
    for f in _shards(directory):
        try:
            with safe_open(str(f), framework="pt") as st:
                for name in st.keys():
                    tensors[name] = st.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise EngineError(f"{f}: unreadable safetensors file ({exc})") from None
    return tensors


def _unpack_int32(x: torch.Tensor, dim: int) -> torch.Tensor:
    """int32 [...] holding 8 nibbles each -> uint8 codes, the 8 codes laid out along `dim`."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    if dim == 0:  # [R, C] -> [R * 8, C]
        codes = (x[:, None, :] >> shifts[None, :, None]) & 0xF
        return codes.reshape(-1, x.shape[1]).to(torch.uint8)
    codes = (x[:, :, None] >> shifts[None, None, :]) & 0xF  # [R, C, 8] -> [R, C * 8]
    return codes.reshape(x.shape[0], -1).to(torch.uint8)


def gptq_to_int4(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor | None,
                 group_size: int, v1_zero_offset: bool, name: str = "layer") -> Int4Weight:
    """One GPTQ layer -> Int4Weight (act-order columns permuted so each group is contiguous)."""
    q = _unpack_int32(qweight.to(torch.int32), 0)  # [in, out]
    z = _unpack_int32(qzeros.to(torch.int32), 1).float()[:, :q.shape[1]]  # [groups, out]
    if v1_zero_offset:
        z = z + 1
    n_in = q.shape[0]
    s = scales.float()  # [groups, out]
    if group_size <= 0:  # group_size -1 = one group per column span
        group_size = n_in
    if n_in % group_size or s.shape[0] != n_in // group_size:
        raise EngineError(f"{name}: GPTQ scales have {s.shape[0]} groups, expected {n_in}/{group_size}")
    perm = None
    if g_idx is not None:
        g = g_idx.long()
        if not torch.equal(g, torch.arange(n_in) // group_size):
            perm = torch.argsort(g, stable=True)
            if not torch.equal(g[perm], torch.arange(n_in) // group_size):
                raise EngineError(f"{name}: g_idx does not assign exactly {group_size} columns to each group")
    codes = q if perm is None else q[perm]  # [in, out] in grouped column order
    return Int4Weight(pack_int4(codes.t().contiguous()), s.t().contiguous(), (-z * s).t().contiguous(),
                      group_size, perm)


def convert_gptq(tensors: dict, qc: dict, source: str) -> None:
    """Replace each GPTQ layer's qweight/qzeros/scales/g_idx in `tensors` by one `Int4Weight` `{base}.weight`;
    qc is the checkpoint's `quantization_config` (or quantize_config.json)."""
    if qc.get("quant_method", "gptq") != "gptq" or int(qc.get("bits", 4)) != 4:
        raise EngineError(f"{source}: quantization {qc.get('quant_method')!r} bits={qc.get('bits')} is not "
                          "supported (GPTQ 4-bit only)")
    v1 = qc.get("checkpoint_format", "gptq") != "gptq_v2"
    group = int(qc.get("group_size", 128))
    for qname in [n for n in tensors if n.endswith(".qweight")]:
        base = qname[:-len(".qweight")]
        try:
            parts = [tensors.pop(f"{base}.{k}") for k in ("qweight", "qzeros", "scales")]
        except KeyError as exc:
            raise EngineError(f"{source}: GPTQ layer {base!r} lacks {exc.args[0]!r}") from None
        g_idx = tensors.pop(f"{base}.g_idx", None)
        tensors[f"{base}.weight"] = gptq_to_int4(*parts, g_idx, group, v1, name=f"{source}: {base}")


_PROJECTIONS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                "up_proj.weight", "down_proj.weight")
KERNEL_GROUP = 128  # widest group torch's CPU int4 kernel is fast with; a wider ternary scale is repeated to it


def _ternary_group(a: torch.Tensor, group: int) -> bool:
    """a: |w| [rows, in]. True when, within every run of `group` columns of a row, all non-zero values are equal."""
    g = a.view(a.shape[0], -1, group)
    s = g.amax(-1, keepdim=True)
    return bool(((g == 0) | (g == s)).all())


def ternary_to_int4(w: torch.Tensor) -> Int4Weight | None:
    """A fake-quantized ternary weight [out, in] -> the exact Int4Weight (codes t + 8, scale s, min -8s), or None
    when w is not ternary. The scale group is found from the data (BitCPM4's config.json does not state it):
    the widest of (in, 1024, ..., 32) under which every group's non-zero magnitudes are one value."""
    n_out, n_in = w.shape
    candidates = [n_in] + [g for g in (1024, 512, 256, 128, 64, 32) if g < n_in and n_in % g == 0]
    smallest = candidates[-1]
    if n_in % 2 or not _ternary_group(w[:1].abs().float(), smallest):  # cheap reject: first row only
        return None
    a = w.abs().float()
    group = next((g for g in candidates if _ternary_group(a, g)), None)
    if group is None:
        return None
    scales = a.view(n_out, -1, group).amax(-1)  # [out, in / group]
    sub = next((k for k in (KERNEL_GROUP, 64, 32) if k < group and group % k == 0), None)
    if group > KERNEL_GROUP and sub:  # same values, repeated to a group the int4 kernels take
        scales, group = scales.repeat_interleave(group // sub, dim=1), sub
    # codes t + 8 with min -8s: torch's CPU int4 form (q - 8) * scale + zero then has zero = 0 exactly, so no
    # bf16 rounding of a zero point turns the ternary zeros into small non-zeros
    codes = torch.sign(w.float()).to(torch.int8) + 8  # {-1, 0, 1} -> {7, 8, 9}
    return Int4Weight(pack_int4(codes), scales, -8 * scales, group)


def _compact_ternary(tensors: dict) -> int:
    """Replace every exactly-ternary projection weight by its int4 form; returns how many were replaced."""
    n = 0
    for name in [k for k in tensors if k.endswith(_PROJECTIONS)]:
        w = tensors[name]
        if isinstance(w, torch.Tensor) and w.dim() == 2 and w.is_floating_point():
            t = ternary_to_int4(w)
            if t is not None:
                tensors[name], n = t, n + 1
    return n


def load_hf(directory: Path) -> tuple[ModelConfig, dict]:
    """(config, canonical tensors) from an HF folder: config.json + safetensors (+ GPTQ int4 layers; fake-
    quantized ternary projections, as in BitCPM4, are kept as exact int4 codes)."""
    cfg = ModelConfig.from_hf_dir(directory)
    tensors = read_safetensors(directory)
    if any(n.endswith(".qweight") for n in tensors):
        convert_gptq(tensors, cfg.quantization or {}, str(directory))
    else:
        _compact_ternary(tensors)
    return cfg, tensors
