"""The `cpm` command: one argparse entry; each subcommand lives in its own module under tui/commands/.

A command module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Heavy imports (torch, faiss, textual) happen inside those functions, so `cpm --help` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import tui.commands
from tui.errors import user_errors


class OneLineParser(argparse.ArgumentParser):
    """A command-line mistake is one line (exit 2), pointing at --help instead of printing the whole usage block.
    Subcommand parsers are made of the same class (argparse's add_subparsers default)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="cpm",
        description="cpm-suite: embedded inference engine, survey writer, MCP tool caller and TUI.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(tui.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"tui.commands.{info.name}")
        module.register(sub)
    _add_cache_switch(sub)
    return parser


def _add_cache_switch(sub: argparse._SubParsersAction) -> None:
    """Every command that loads a model (it takes --model, or it is `demo`) gets the engine's prefix-cache switch,
    here rather than in each command module; nested commands (`cpm eval bfcl`) included."""
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_cache_switch(action)
        options = command._option_string_actions
        if ("--model" in options or name == "demo") and "--no-prefix-cache" not in options:
            command.add_argument("--no-prefix-cache", action="store_true",
                                 help="embedded engine: prefill every prompt from its start (no prefix cache; "
                                      "same as CPM_PREFIX_CACHE=0)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "no_prefix_cache", False):
        os.environ["CPM_PREFIX_CACHE"] = "0"  # read by Engine.load, whichever layer loads the model
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        print(f"cpm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cpm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
