"""Score a results file (JSON lines with `id` and `result`, BFCL's result format) against the data."""
from __future__ import annotations

import json
from pathlib import Path

from agents.bfcl.checker import check_case
from agents.bfcl.data import DEFAULT_CATEGORIES, BfclCase, category_of, load_category
from agents.bfcl.metrics import call_counts, summarize
from agents.errors import AgentError


def load_results(path: Path) -> dict[str, dict]:
    """id -> record. A record needs `id` and `result`; later lines win over earlier ones for the same id."""
    path = Path(path)
    if not path.is_file():
        raise AgentError(f"results file {path} not found")
    records: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AgentError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "id" not in record or "result" not in record:
                raise AgentError(f"{path}:{n}: each line needs `id` and `result` (BFCL's result format)")
            records[str(record["id"])] = record
    return records


def cases_for(data_dir: Path, ids) -> dict[str, BfclCase]:
    """The cases named by `ids`, loading each needed category once; unknown ids are an error."""
    wanted: dict[str, set[str]] = {}
    for case_id in ids:
        wanted.setdefault(category_of(case_id), set()).add(case_id)
    found: dict[str, BfclCase] = {}
    for cat, cat_ids in wanted.items():
        by_id = {c.id: c for c in load_category(data_dir, cat)}
        missing = sorted(cat_ids - set(by_id))
        if missing:
            raise AgentError(f"ids not in {cat} data: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        found.update((i, by_id[i]) for i in cat_ids)
    return found


def score_records(cases: list[BfclCase], records: dict[str, dict], name_mode: str = "either") -> dict:
    """The report: `cases` (id, category, valid, error_type, error) and `summary` (metrics.summarize)."""
    rows, out = [], []
    for case in cases:
        verdict = check_case(case, records[case.id]["result"], name_mode)
        counts = None if case.ground_truth is None else call_counts(case, verdict.decoded)
        rows.append({"category": case.category, "valid": verdict.valid, "counts": counts})
        out.append({"id": case.id, "category": case.category, "valid": verdict.valid,
                    "error_type": verdict.error_type, "error": verdict.error})
    return {"cases": out, "summary": summarize(rows)}


def _order(case_id: str):
    # The standard categories first, in their usual order; then by integer index (`_10` after `_9`).
    cat, _, index = case_id.rpartition("_")
    head = index.split("-")[0]
    rank = DEFAULT_CATEGORIES.index(cat) if cat in DEFAULT_CATEGORIES else len(DEFAULT_CATEGORIES)
    return (rank, cat, int(head) if head.isdigit() else 0, case_id)


def score_file(results: Path, data_dir: Path, name_mode: str = "either") -> dict:
    """Score every record of a results file against the BFCL data folder."""
    records = load_results(results)
    if not records:
        raise AgentError(f"results file {results} has no records")
    by_id = cases_for(data_dir, records)
    return score_records([by_id[i] for i in sorted(records, key=_order)], records, name_mode)
