"""Reading a GGUF file's header and tensor table, and handing out zero-copy views of its tensor bytes.

Why not `gguf.GGUFReader`: it builds a numpy memmap view per metadata array element, which takes ~10 s for
SmolLM2's 49k-token vocabulary and 49k merges on this machine. The header is a simple little-endian format
(llama.cpp `docs/gguf.md`), so a struct walk over an mmap reads it in well under a second; the `gguf` package
still supplies the type ids, block sizes and the reference dequantizers.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.errors import EngineError

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(EngineError):
    """A GGUF file that is not readable: wrong magic, truncated, or an unsupported type."""


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # torch order (rows first); GGUF stores fastest-moving dimension first
    qtype: GGMLQuantizationType
    data: np.ndarray  # uint8 view of exactly this tensor's bytes


class _Cursor:
    """Little-endian reads at a moving offset; running off the end is a truncated file."""

    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise GGUFError(f"{self.path}: truncated GGUF (header ends at byte {len(self.buf)}, "
                            f"needed {self.pos + size})")
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise GGUFError(f"{self.path}: truncated GGUF (a {n}-byte string runs past the end of the file)")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])[0]
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<IQ")
            if etype in _SCALAR:
                fmt = _SCALAR[etype]
                return list(self.unpack(f"<{count}{fmt[1]}"))
            return [self.value(etype) for _ in range(count)]
        raise GGUFError(f"{self.path}: unknown GGUF metadata value type {vtype}")


class GGUFFile:
    """An opened GGUF: `metadata` dict, `tensors` by name (views into one read-only mmap)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # mmap of an empty file
            raise GGUFError(f"{self.path}: empty file, not a GGUF") from None
        buf = memoryview(self._mmap)
        cur = _Cursor(buf, self.path)
        if bytes(buf[:4]) != b"GGUF":
            raise GGUFError(f"{self.path}: not a GGUF file (magic {bytes(buf[:4])!r}, expected b'GGUF')")
        cur.pos = 4
        version, n_tensors, n_kv = cur.unpack("<IQQ")
        if version not in (2, 3):
            raise GGUFError(f"{self.path}: GGUF version {version} is not supported (2 or 3)")
        self.metadata: dict = {}
        for _ in range(n_kv):
            key = cur.string()
            (vtype,) = cur.unpack("<I")
            self.metadata[key] = cur.value(vtype)
        table = []
        for _ in range(n_tensors):
            name = cur.string()
            (ndim,) = cur.unpack("<I")
            dims = cur.unpack(f"<{ndim}Q")
            qtype, offset = cur.unpack("<IQ")
            table.append((name, tuple(reversed(dims)), qtype, offset))
        align = int(self.metadata.get("general.alignment", 32))
        data_start = (cur.pos + align - 1) // align * align
        whole = np.frombuffer(self._mmap, dtype=np.uint8)
        self.tensors: dict[str, GGUFTensor] = {}
        for name, shape, qtype, offset in table:
            try:
                qt = GGMLQuantizationType(qtype)
            except ValueError:
                raise GGUFError(f"{self.path}: tensor {name!r} has unknown ggml type id {qtype}") from None
            block, nbytes_block = GGML_QUANT_SIZES[qt]
            n = int(np.prod(shape))
            if shape[-1] % block:
                raise GGUFError(f"{self.path}: tensor {name!r} row length {shape[-1]} is not a multiple "
                                f"of the {qt.name} block size {block}")
            nbytes = n // block * nbytes_block
            start = data_start + offset
            if start + nbytes > len(whole):
                raise GGUFError(f"{self.path}: truncated GGUF: tensor {name!r} needs bytes {start}..{start + nbytes} "
                                f"but the file has {len(whole)}")
            self.tensors[name] = GGUFTensor(name, shape, qt, whole[start:start + nbytes])
