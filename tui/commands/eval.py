"""`cpm eval ...`: evaluations; each one lives in a module under tui/eval_commands/."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

import tui.eval_commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate: BFCL-style function calling, FactScore of surveys")
    inner = p.add_subparsers(dest="evaluation", metavar="EVALUATION")
    for info in sorted(pkgutil.iter_modules(tui.eval_commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"tui.eval_commands.{info.name}").register(inner)
    p.set_defaults(func=lambda args: p.print_help() or 2)
