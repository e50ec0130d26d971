"""Model shapes shared by the engine benchmark and its peers (MiniCPM4 configs, shared/reference §4)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    inter: int
    vocab: int
    eps: float
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPES = {
    "0.5b": Shape(hidden=1024, layers=24, heads=16, kv_heads=2, inter=4096, vocab=73448, eps=1e-5, tied=True),
    "8b": Shape(hidden=4096, layers=32, heads=32, kv_heads=2, inter=16384, vocab=73448, eps=1e-6, tied=False),
}
