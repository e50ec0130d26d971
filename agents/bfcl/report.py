"""Write the JSON report and render the summary as a rich table."""
from __future__ import annotations

import json
from pathlib import Path

REPORT_NAME = "bfcl_report.json"


def write_report(report: dict, out_dir: Path) -> Path:
    """Write `report` (cases + summary) to OUT/bfcl_report.json atomically; returns the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def summary_table(summary: dict, title: str = "BFCL (AST)"):
    """A rich Table: one row per category plus the overall row (accuracies in percent)."""
    from rich.table import Table

    # MiniCPM4-MCP's three accuracies: function name, parameter names, parameter values (percent).
    table = Table("category", "cases", "acc %", "calls %", "name %", "params %", "values %", title=title)
    rows = list(summary["categories"].items()) + [("overall", summary["overall"])]
    for name, m in rows:
        table.add_row(name if name != "overall" else "[bold]overall[/]", str(m["cases"]), _pct(m["accuracy"]),
                      _pct(m.get("call_rate")),
                      _pct(m["function_name_accuracy"]), _pct(m["param_name_accuracy"]),
                      _pct(m["param_value_accuracy"]), end_section=name == rows[-2][0] if len(rows) > 1 else False)
    return table


def markdown_table(summary: dict) -> str:
    """The same numbers as a Markdown table (for docs/benchmarks.md)."""
    lines = ["| category | cases | accuracy % | calls % | func name % | param name % | param value % |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in list(summary["categories"].items()) + [("overall", summary["overall"])]:
        lines.append(f"| {name} | {m['cases']} | {_pct(m['accuracy'])} | {_pct(m.get('call_rate'))} | "
                     f"{_pct(m['function_name_accuracy'])} | "
                     f"{_pct(m['param_name_accuracy'])} | {_pct(m['param_value_accuracy'])} |")
    return "\n".join(lines)
