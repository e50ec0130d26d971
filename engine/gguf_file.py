"""Reading a GGUF file's header and tensor table, and handing out zero-copy views of its tensor bytes.

Why not `gguf.GGUFReader`: it builds a numpy memmap view per metadata array element, which takes ~10 s for
SmolLM2's 49k-token vocabulary and 49k merges on this machine. The header is a simple little-endian format
(llama.cpp `docs/gguf.md`), so a struct walk over an mmap reads it in well under a second; the `gguf` package
still supplies the type ids, block sizes and the reference dequantizers.
"""
from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from engine.errors import EngineError

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 4  # arrays of arrays are legal; deeper than this is a damaged file, not a model
# Smallest encoding of one entry, so that a count can be checked against the bytes left before reading it:
_MIN_KV = 8 + 4 + 1  # key length, value type, a one-byte value
_MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset
_MIN_ITEM = {_STRING: 8, _ARRAY: 12}


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

    def left(self) -> int:
        return len(self.buf) - self.pos

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        if n > self.left():
            raise GGUFError(f"{self.path}: truncated GGUF (a {n}-byte string runs past the end of the file)")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int, key: str, nesting: int = 0):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])[0]
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<IQ")
            item = struct.calcsize(_SCALAR[etype]) if etype in _SCALAR else _MIN_ITEM.get(etype)
            if item is None:
                raise GGUFError(f"{self.path}: metadata {key!r} is an array of unknown value type {etype}")
            if count * item > self.left():  # checked before anything is read or allocated
                raise GGUFError(f"{self.path}: metadata {key!r} claims {count} array items, more than the "
                                f"{self.left()} bytes left in the file")
            if etype in _SCALAR:
                return list(self.unpack(f"<{count}{_SCALAR[etype][1]}"))
            if etype == _ARRAY and nesting >= MAX_ARRAY_NESTING:
                raise GGUFError(f"{self.path}: metadata {key!r} nests arrays more than {MAX_ARRAY_NESTING} deep")
            return [self.value(etype, key, nesting + 1) for _ in range(count)]
        raise GGUFError(f"{self.path}: metadata {key!r} has unknown GGUF value type {vtype}")


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
        if n_kv * _MIN_KV + n_tensors * _MIN_TENSOR_INFO > cur.left():
            raise GGUFError(f"{self.path}: the header claims {n_kv} metadata entries and {n_tensors} tensors, "
                            f"more than its {len(buf)} bytes can hold")
        self.metadata: dict = {}
        for _ in range(n_kv):
            key = cur.string()
            (vtype,) = cur.unpack("<I")
            if key in self.metadata:
                raise GGUFError(f"{self.path}: metadata key {key!r} appears twice")
            self.metadata[key] = cur.value(vtype, key)
        table = [self._tensor_info(cur) for _ in range(n_tensors)]
        align = self._alignment()
        data_start = (cur.pos + align - 1) // align * align
        whole = np.frombuffer(self._mmap, dtype=np.uint8)
        self.tensors: dict[str, GGUFTensor] = {}
        for name, shape, qtype, offset in table:
            if name in self.tensors:
                raise GGUFError(f"{self.path}: tensor {name!r} appears twice")
            try:
                qt = GGMLQuantizationType(qtype)
            except ValueError:
                raise GGUFError(f"{self.path}: tensor {name!r} has unknown ggml type id {qtype}") from None
            block, nbytes_block = GGML_QUANT_SIZES[qt]
            n = math.prod(shape)
            if shape[-1] % block:
                raise GGUFError(f"{self.path}: tensor {name!r} row length {shape[-1]} is not a multiple "
                                f"of the {qt.name} block size {block}")
            if offset % align:
                raise GGUFError(f"{self.path}: tensor {name!r} data offset {offset} is not a multiple of the "
                                f"alignment {align}")
            nbytes = n // block * nbytes_block
            start = data_start + offset
            if start + nbytes > len(whole):
                raise GGUFError(f"{self.path}: truncated GGUF: tensor {name!r} needs bytes {start}..{start + nbytes} "
                                f"but the file has {len(whole)}")
            self.tensors[name] = GGUFTensor(name, shape, qt, whole[start:start + nbytes])

    def _tensor_info(self, cur: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
        """One tensor table entry: name, shape (torch order), ggml type id, data offset; dims checked."""
        name = cur.string()
        (ndim,) = cur.unpack("<I")
        if not 1 <= ndim <= MAX_DIMS:
            raise GGUFError(f"{self.path}: tensor {name!r} has {ndim} dimensions (GGUF allows 1..{MAX_DIMS})")
        dims = cur.unpack(f"<{ndim}Q")
        if min(dims) < 1:
            raise GGUFError(f"{self.path}: tensor {name!r} has a zero dimension {list(dims)}")
        qtype, offset = cur.unpack("<IQ")
        return name, tuple(reversed(dims)), qtype, offset

    def _alignment(self) -> int:
        align = self.metadata.get("general.alignment", 32)
        if not isinstance(align, int) or isinstance(align, bool) or align < 1 or align & (align - 1) \
                or align > 1 << 20:
            raise GGUFError(f"{self.path}: general.alignment must be a power of two up to 1 MiB, got {align!r}")
        return align
