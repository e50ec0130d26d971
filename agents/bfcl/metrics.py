"""Accuracies: BFCL's per-category accuracy and MiniCPM4-MCP's function / parameter-name / parameter-value
accuracies (demo/minicpm4/MCP/eval_scripts.py in OpenBMB/MiniCPM), adapted to BFCL's possible answers.

MiniCPM4-MCP scores one expected call per sample; here every expected call of a case with answers is a
sample (a parallel case with 3 calls gives 3). The three counts are nested and share that denominator:
- name: a predicted call has the expected name (the matching one is used, else the first unused one);
- param names: additionally its argument names form an acceptable set, i.e. MiniCPM's exact set match
  generalised to BFCL's optional parameters: required-by-answer <= names <= all answer parameters;
- param values: additionally every argument equals an allowed value after MiniCPM's `normalize_value`
  (BFCL's dict answers list allowed values per key, so dicts are matched key by key with that rule).
Undecodable or empty predictions count as wrong and stay in the denominator, as MiniCPM's invalid ones do.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from agents.bfcl.checker import names
from agents.bfcl.data import BfclCase


def normalize_value(value):
    """MiniCPM4-MCP's normalisation: numeric strings -> float ('.' in it) or int, "true"/"false" -> bool,
    other strings lower-cased and stripped; non-strings unchanged."""
    if isinstance(value, str):
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            if value.lower() in ("true", "false"):
                return value.lower() == "true"
            return value.lower().strip()
    return value


@dataclass
class CallCounts:
    """Nested per-call counts for MiniCPM's three accuracies."""

    calls: int = 0
    name: int = 0
    param_names: int = 0
    param_values: int = 0

    def add(self, other: "CallCounts") -> None:
        self.calls += other.calls
        self.name += other.name
        self.param_names += other.param_names
        self.param_values += other.param_values

    def as_dict(self) -> dict:
        ratio = (lambda n: round(n / self.calls, 4) if self.calls else None)
        return {"calls": self.calls, "function_name_accuracy": ratio(self.name),
                "param_name_accuracy": ratio(self.param_names), "param_value_accuracy": ratio(self.param_values)}


def call_counts(case: BfclCase, decoded: list[dict] | None) -> CallCounts:
    """MiniCPM-style counts for one case with answers; `decoded` is None when the output did not decode."""
    counts = CallCounts(calls=len(case.ground_truth))
    predicted = [c for c in (decoded or []) if isinstance(c, dict) and len(c) == 1]
    unused = list(range(len(predicted)))
    for answer in case.ground_truth:
        if not unused:
            continue
        gt_name, allowed = next(iter(answer.items()))
        accepted = names(gt_name)
        pick = next((j for j in unused if next(iter(predicted[j])) in accepted), unused[0])
        unused.remove(pick)
        pred_name, args = next(iter(predicted[pick].items()))
        if pred_name not in accepted:
            continue
        counts.name += 1
        if not isinstance(args, dict):
            continue
        required = {p for p, options in allowed.items() if "" not in options}
        if not (required <= set(args) <= set(allowed)):
            continue
        counts.param_names += 1
        if all(_value_ok(args[p], allowed[p]) for p in args):
            counts.param_values += 1
    return counts


def _value_ok(value, options: list) -> bool:
    """Equal to one allowed value after normalisation; BFCL's dict answers hold allowed values per key, so
    dicts (and lists of dicts) are matched key by key with the same rule."""
    return any(_equal(value, o) for o in options if o != "")


def _equal(value, option) -> bool:
    if isinstance(option, dict):
        return (isinstance(value, dict) and set(value) <= set(option)
                and all(k in value or "" in v for k, v in option.items())
                and all(_value_ok(value[k], option[k]) for k in value))
    if isinstance(option, list) and any(isinstance(o, dict) for o in option):
        return isinstance(value, list) and len(value) == len(option) and all(
            _equal(v, o) for v, o in zip(value, option))
    return normalize_value(value) == normalize_value(option)


def summarize(rows: list[dict]) -> dict:
    """rows: {category, valid, counts: CallCounts | None} -> per-category and overall metrics."""
    per_cat: dict[str, dict] = defaultdict(lambda: {"cases": 0, "correct": 0, "called": 0, "counts": CallCounts()})
    for row in rows:
        slot = per_cat[row["category"]]
        slot["cases"] += 1
        slot["correct"] += int(row["valid"])
        slot["called"] += int(row.get("called", False))
        if row["counts"] is not None:
            slot["counts"].add(row["counts"])
    categories = {}
    total = CallCounts()
    for cat, slot in per_cat.items():   # first-seen order: the order the cases came in
        total.add(slot["counts"])
        categories[cat] = {"cases": slot["cases"], "correct": slot["correct"],
                           "accuracy": round(slot["correct"] / slot["cases"], 4),
                           # the share of cases whose output holds at least one call (irrelevance: lower is right)
                           "call_rate": round(slot["called"] / slot["cases"], 4), **slot["counts"].as_dict()}
    cases = sum(c["cases"] for c in categories.values())
    correct = sum(c["correct"] for c in categories.values())
    overall = {"cases": cases, "correct": correct,
               "accuracy": round(correct / cases, 4) if cases else None,
               # BFCL's summaries average categories without weighting them by size.
               "macro_accuracy": (round(sum(c["accuracy"] for c in categories.values()) / len(categories), 4)
                                  if categories else None),
               "call_rate": round(sum(s["called"] for s in per_cat.values()) / cases, 4) if cases else None,
               **total.as_dict()}
    return {"categories": categories, "overall": overall}
