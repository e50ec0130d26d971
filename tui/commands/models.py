"""`cpm models`: the default model aliases, where each resolves here, and whether it is present."""
from __future__ import annotations

import argparse
import json

from engine.assets import ASSETS, resolve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model aliases and where they resolve on this machine")
    p.add_argument("--check", metavar="NAME", help="resolve one alias or path; exit 2 when it is missing")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.check:
        print(resolve(args.check))
        return 0
    rows = []
    for asset in ASSETS.values():
        path = asset.locate()
        rows.append({"alias": asset.alias, "kind": asset.kind, "present": path is not None,
                     "path": str(path) if path else None, "install": asset.install_command,
                     "description": asset.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    from tui.console import output_console

    table = Table("alias", "kind", "present", "path / fix")
    for r in rows:
        table.add_row(r["alias"], r["kind"], "yes" if r["present"] else "[red]no[/]",
                      r["path"] or f"run: {r['install']}")
    output_console().print(table)
    return 0
