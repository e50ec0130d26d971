"""Score a results file (JSON lines with `id` and `result`, BFCL's result format) against the data."""
from __future__ import annotations

import json
from pathlib import Path

from agents.bfcl.checker import check_case
from agents.bfcl.data import DEFAULT_CATEGORIES, BfclCase, category_of, load_category
from agents.bfcl.decode import is_empty
from agents.bfcl.metrics import call_counts, summarize
from agents.errors import AgentError


def read_results(path: Path) -> tuple[dict[str, dict], list[dict]]:
    """(id -> record, bad lines). A record needs `id` and `result`; later lines win over earlier ones for the
    same id. A line that is not UTF-8, not JSON (or nested too deeply to read) or not a record is reported as
    `{"line": n, "error": ...}` and the others are kept, as BFCL's own runner scores what it can."""
    path = Path(path)
    if not path.is_file():
        raise AgentError(f"results file {path} not found")
    records: dict[str, dict] = {}
    errors: list[dict] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            problem, record = _record(raw)
            if problem:
                errors.append({"line": n, "error": problem})
            elif record is not None:
                records[str(record["id"])] = record
    return records, errors


def _record(raw: bytes) -> tuple[str | None, dict | None]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte {exc.start})", None
    if not line.strip():
        return None, None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg}, column {exc.colno})", None
    except RecursionError:
        return "JSON nested too deeply to read", None
    if not isinstance(record, dict) or "id" not in record or "result" not in record:
        return "each line needs `id` and `result` (BFCL's result format)", None
    return None, record


def load_results(path: Path) -> dict[str, dict]:
    """The good records of a results file (see read_results); bad lines are skipped."""
    return read_results(path)[0]


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
        called = verdict.decoded is not None and not is_empty(verdict.decoded)
        rows.append({"category": case.category, "valid": verdict.valid, "counts": counts, "called": called})
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
    """Score every good record of a results file against the BFCL data folder; lines that could not be read
    are listed under the report's `errors` (and counted in its summary as `unreadable_lines`)."""
    records, errors = read_results(results)
    if not records:
        detail = f" ({len(errors)} unreadable lines, the first: line {errors[0]['line']}: {errors[0]['error']})" \
            if errors else ""
        raise AgentError(f"results file {results} has no records{detail}")
    by_id = cases_for(data_dir, records)
    report = score_records([by_id[i] for i in sorted(records, key=_order)], records, name_mode)
    report["errors"] = errors
    report["summary"]["unreadable_lines"] = len(errors)
    return report
