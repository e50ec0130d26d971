"""Test helper: turn a BFCL possible answer into the model output that a perfect model would give."""
from __future__ import annotations

import json


def pick(value):
    """A concrete value from an allowed-value entry: dict answers hold lists of allowed values per key."""
    if isinstance(value, dict):
        return {k: pick(first(vals)) for k, vals in value.items() if any(v != "" for v in vals)}
    if isinstance(value, list):
        return [pick(v) if isinstance(v, dict) else v for v in value]
    return value


def first(allowed: list):
    return next(v for v in allowed if v != "")


def perfect_calls(case) -> list[tuple[str, dict]]:
    """(name, args) per expected call; parameters absent from the function's schema are left out (two
    answers in the shared data list such parameters, which BFCL itself would reject as unexpected)."""
    props = {f["name"]: f["parameters"]["properties"] for f in case.functions}
    calls = []
    for call in case.ground_truth:
        name, params = next(iter(call.items()))
        calls.append((name, {k: pick(first(v)) for k, v in params.items()
                             if k in props[name] and any(x != "" for x in v)}))
    return calls


def as_function_calling(calls) -> list[dict]:
    return [{name: json.dumps(args)} for name, args in calls]


def as_prompting(calls) -> str:
    return "[" + ", ".join(f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"
                           for name, args in calls) + "]"
