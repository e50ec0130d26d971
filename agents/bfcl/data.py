"""BFCL question files and possible-answer files, joined into `BfclCase`s.

Layout (as in the `bfcl-eval` package): `DIR/BFCL_v<N>_<category>.json` holds questions, one JSON object a
line (`id`, `question` turns, `function` docs); `DIR/possible_answer/BFCL_v<N>_<category>.json` holds
`id`, `ground_truth`. Relevance categories (`irrelevance`, `live_relevance`, ...) have no answers.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from agents.errors import AgentError

# The single-turn Python categories this checker handles; `simple` is the pre-v4 name of `simple_python`.
DEFAULT_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
ALIASES = {"simple": "simple_python"}
_FILE = re.compile(r"^BFCL_v(\d+)_(.+)\.json$")
# Categories whose checking needs another language's type rules or an executor: not handled here.
_UNSUPPORTED = ("java", "javascript", "multi_turn", "exec", "rest", "sql", "chatable", "memory", "web_search",
                "format_sensitivity")


@dataclass(frozen=True)
class BfclCase:
    """One BFCL test entry; `ground_truth` is None for relevance categories (no possible answers)."""

    id: str
    category: str
    question: list          # turns; each turn is a list of {"role", "content"} messages
    functions: list[dict]   # BFCL function docs (Python type names: dict, float, tuple, any, ...)
    ground_truth: list[dict] | None  # [{function_name: {param: [allowed values]}}]


def is_relevance(category: str) -> bool:
    """`irrelevance`/`live_irrelevance` (right answer: no call) and `live_relevance` (any call)."""
    return "relevance" in category


def category_of(case_id: str) -> str:
    """`simple_python_12` -> `simple_python`; `live_simple_19-3-15` -> `live_simple` (BFCL's id scheme)."""
    if "_" not in case_id:
        raise AgentError(f"BFCL id {case_id!r} has no `<category>_<index>` form")
    return case_id.rsplit("_", 1)[0]


def available_categories(data_dir: Path) -> dict[str, Path]:
    """Category -> question file (the newest BFCL version when several are present)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise AgentError(f"BFCL data folder {data_dir} not found (pass --data, e.g. ../shared/data/bfcl)")
    found: dict[str, tuple[int, Path]] = {}
    for path in data_dir.iterdir():
        m = _FILE.match(path.name)
        if m and path.is_file():
            version, cat = int(m.group(1)), m.group(2)
            if cat not in found or version > found[cat][0]:
                found[cat] = (version, path)
    if not found:
        raise AgentError(f"no BFCL question files (BFCL_v<N>_<category>.json) in {data_dir}")
    return {cat: path for cat, (_, path) in sorted(found.items())}


def resolve_categories(data_dir: Path, names: list[str] | None) -> list[str]:
    """Validate category names against the files present; None means the default five that exist."""
    present = available_categories(data_dir)
    if not names:
        return [c for c in DEFAULT_CATEGORIES if c in present]
    out = []
    for name in names:
        cat = ALIASES.get(name, name)
        if cat not in present:
            raise AgentError(f"BFCL category {name!r} not in {data_dir}; present: {', '.join(present)}")
        if any(tag in cat for tag in _UNSUPPORTED):
            raise AgentError(f"BFCL category {cat!r} is not a single-turn Python AST category; "
                             f"supported: {', '.join(c for c in present if not any(t in c for t in _UNSUPPORTED))}")
        out.append(cat)
    return out


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise AgentError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return rows


def load_category(data_dir: Path, category: str) -> list[BfclCase]:
    """All cases of one category, each joined with its possible answer (by id)."""
    category = ALIASES.get(category, category)
    question_file = available_categories(data_dir).get(category)
    if question_file is None:
        raise AgentError(f"BFCL category {category!r} has no question file in {data_dir}")
    answers: dict[str, list] = {}
    if not is_relevance(category):
        answer_file = question_file.parent / "possible_answer" / question_file.name
        if not answer_file.exists():
            raise AgentError(f"{answer_file} missing: category {category!r} needs its possible answers")
        answers = {row["id"]: row["ground_truth"] for row in _read_jsonl(answer_file)}
    cases = []
    for row in _read_jsonl(question_file):
        for key in ("id", "question", "function"):
            if key not in row:
                raise AgentError(f"{question_file}: an entry lacks {key!r} (is this a BFCL question file?)")
        truth = None
        if not is_relevance(category):
            if row["id"] not in answers:
                raise AgentError(f"{row['id']}: no possible answer in {question_file.parent / 'possible_answer'}")
            truth = answers[row["id"]]
        cases.append(BfclCase(row["id"], category, row["question"], row["function"], truth))
    return cases


def load_cases(data_dir: Path, categories: list[str] | None = None, limit: int | None = None) -> list[BfclCase]:
    """Cases of the given categories (default: the five standard ones), the first `limit` of each."""
    cases = []
    for cat in resolve_categories(data_dir, categories):
        cases.extend(load_category(data_dir, cat)[:limit] if limit else load_category(data_dir, cat))
    return cases
