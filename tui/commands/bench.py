"""`cpm bench NAME [ARGS...]`: runs the benchmark module `bench/NAME.py` (its own argparse `main(argv)`)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

import bench
from tui.errors import UsageError


def _names() -> list[str]:
    # modules with a main(argv); packages (bench/peers: the peers the benchmarks time) are not benchmarks
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_") and not m.ispkg)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks beside their peers (see docs/benchmarks.md)",
                       description=f"benchmarks: {', '.join(_names()) or 'none yet'}")
    p.add_argument("name", help="which benchmark: " + ", ".join(_names()))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options (NAME --help)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.name not in _names():
        raise UsageError(f"unknown benchmark {args.name!r}; choose one of: {', '.join(_names())}")
    return int(importlib.import_module(f"bench.{args.name}").main(args.args) or 0)
