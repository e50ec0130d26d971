"""Speculative decoding: drafters propose token trees, the target model verifies them in one pass (lossless).

`make_drafter(engine, spec)` turns a request's `SamplingParams.spec` into a Drafter; `speculative_stream`
is the generation loop Engine.stream hands such requests to.
"""
from __future__ import annotations

from engine.errors import EngineError
from engine.speculative.decode import SpecStats, speculative_stream
from engine.speculative.drafter import Draft, Drafter
from engine.speculative.prompt_lookup import PromptLookupDrafter

__all__ = ["Draft", "Drafter", "PromptLookupDrafter", "SpecStats", "make_drafter", "speculative_stream"]


def make_drafter(engine, spec: str) -> Drafter:
    """"auto" -> a fresh AutoDrafter (prompt lookup verified only where it pays); "prompt-lookup" -> a fresh
    PromptLookupDrafter; "eagle:DIR" -> the Eagle/FR-Spec head in DIR, loaded
    once per engine (its start() resets the per-request state)."""
    if spec == "auto":
        from engine.speculative.auto import AutoDrafter

        return AutoDrafter()
    if spec == "prompt-lookup":
        return PromptLookupDrafter()
    if spec.startswith("eagle:"):
        if spec not in engine.drafters:
            try:
                from engine.speculative.eagle_drafter import load_eagle_drafter
            except ImportError:
                raise EngineError("the Eagle drafter is not available in this build "
                                  "(engine/speculative/eagle_drafter.py missing); use --spec prompt-lookup") from None
            engine.drafters[spec] = load_eagle_drafter(engine, spec[len("eagle:"):])
        return engine.drafters[spec]
    raise EngineError(f"spec must be none, prompt-lookup or eagle:DIR, or auto, got {spec!r}")
