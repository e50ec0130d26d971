"""The serving set-up a BFCL run measured, recorded in its report: the numbers hold only for that set-up.

For the in-process engine that is the weights file and how its layers are stored (int4 with group size, or
dense dtype), device, dtype, context, the speculative drafter, and whether calls were grammar-constrained; for a
server, its URL and model name (its own set-up is the server's to report).
"""
from __future__ import annotations

from collections import Counter
from typing import Any


def serving_setup(chat: Any, mode: str, spec: str) -> dict[str, Any]:
    """What ran: `chat` is the chat model the cases were generated with."""
    engine = getattr(chat, "engine", None)
    setup: dict[str, Any] = {"decoding": mode, "grammar": "xgrammar" if mode == "constrained" else None,
                             "spec": spec, "temperature": getattr(chat, "temperature", None)}
    if engine is None:
        return {**setup, "backend": "openai", "base_url": str(getattr(chat, "base_url", "") or ""),
                "model": getattr(chat, "model_name", None)}
    path = getattr(engine, "path", None)
    return {**setup, "backend": "engine", "model": getattr(chat, "model_name", None),
            "weights_file": getattr(path, "name", str(path)), "device": str(engine.device),
            "dtype": str(engine.dtype).removeprefix("torch."), "max_seq_len": engine.max_seq_len,
            "weights": weight_formats(engine.model)}


def weight_formats(model) -> dict[str, int]:
    """How many linear layers store their weight in each format ("int4/g32", "float32", ...): the quantisation
    as loaded. Reads the engine model's layers (blocks' qkv/o/gate_up/down and the head); {} if it has none."""
    from engine.quant import Int4Weight

    layers = [getattr(b, name, None) for b in getattr(model, "blocks", []) for name in ("qkv", "o", "gate_up", "down")]
    counts: Counter[str] = Counter()
    for layer in [*layers, getattr(model, "head", None)]:
        weight = getattr(layer, "weight", None)
        if isinstance(weight, Int4Weight):
            counts[f"int4/g{weight.group_size}"] += 1
        elif weight is not None:
            counts[str(weight.dtype).removeprefix("torch.")] += 1
    return dict(sorted(counts.items()))
