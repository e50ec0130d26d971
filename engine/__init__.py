"""The embedded inference engine. Import-light: `from engine import Engine` loads torch only on first use."""
from __future__ import annotations

_LAZY = {
    "Engine": "engine.engine",
    "GenerationResult": "engine.results",
    "StreamChunk": "engine.results",
    "EngineStats": "engine.results",
    "Request": "engine.sequence",
    "SamplingParams": "engine.sampling",
    "LogitsProcessor": "engine.sampling",
    "ModelConfig": "engine.config",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
