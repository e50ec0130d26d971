"""The rich Console for command output: the terminal's width on a terminal; no wrapping into a pipe or a file.

Rich lays out for 80 columns when its output is not a terminal, so `make demo | tee log` or `cpm doctor > f`
cut table rows and paths in two. Piped, tables get their natural width instead (they do not expand) and
printed lines are not wrapped; a COLUMNS the user set still wins.
"""
from __future__ import annotations

import os

PIPE_WIDTH = 1000  # "unlimited": tables keep their natural width, lines their length


def output_console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)
