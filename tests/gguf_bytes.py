"""GGUF files byte by byte, for the bad-input and fuzz tests: any count, type, dim or value can be wrong on purpose
(gguf.GGUFWriter refuses most of these, which is why it is not used here). Layout: llama.cpp docs/gguf.md."""
from __future__ import annotations

import struct

U32, I32, F32, BOOL, STR, ARR, U64 = 4, 5, 6, 7, 8, 9, 10
_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q", 11: "<q",
        12: "<d"}


def _string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value) -> bytes:
    if vtype == STR:
        return _string(value)
    if vtype == ARR:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(_value(etype, v) for v in items)
    return struct.pack(_FMT[vtype], value)


def tiny_llama_kv(**override) -> dict[str, tuple[int, object]]:
    """The metadata of a 1-layer llama small enough to load; `override` replaces or (with None) drops keys."""
    kv = {
        "general.architecture": (STR, "llama"),
        "llama.block_count": (U32, 1), "llama.context_length": (U32, 64), "llama.embedding_length": (U32, 32),
        "llama.feed_forward_length": (U32, 64), "llama.attention.head_count": (U32, 2),
        "llama.attention.head_count_kv": (U32, 2), "llama.attention.layer_norm_rms_epsilon": (F32, 1e-5),
        "tokenizer.ggml.tokens": (ARR, (STR, [f"t{i}" for i in range(16)])),
    }
    for key, value in override.items():
        key = key.replace("__", ".")
        if value is None:
            kv.pop(key, None)
        else:
            kv[key] = value
    return kv


def gguf_bytes(kv: dict[str, tuple[int, object]], tensors: list[tuple[str, list[int], int, int]] | None = None,
               data: bytes = b"", *, version: int = 3, n_kv: int | None = None, n_tensors: int | None = None,
               align: int = 32) -> bytes:
    """A GGUF image: `tensors` are (name, dims in GGUF order, ggml type id, offset); counts may lie."""
    tensors = tensors if tensors is not None else [("token_embd.weight", [32, 16], 0, 0)]
    if data == b"" and tensors:
        data = bytes(32 * 16 * 4)
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kv) if n_kv is None else n_kv)
    body = b"".join(_string(k) + struct.pack("<I", t) + _value(t, v) for k, (t, v) in kv.items())
    infos = b"".join(_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
                     + struct.pack("<IQ", qtype, offset) for name, dims, qtype, offset in tensors)
    out = head + body + infos
    return out + bytes(-len(out) % align) + data
