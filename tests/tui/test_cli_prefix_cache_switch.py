"""`--no-prefix-cache`: every command that loads a model takes it, and it turns the engine's cache off."""
from __future__ import annotations

import argparse
import os

import pytest

from tui.cli import build_parser, main as cli_main

MODEL_COMMANDS = [["generate"], ["chat"], ["survey"], ["serve"], ["tui"], ["demo"], ["eval", "bfcl"],
                  ["eval", "factscore"]]


def _parser_of(parser: argparse.ArgumentParser, path: list[str]) -> argparse.ArgumentParser:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("path", MODEL_COMMANDS, ids=" ".join)
def test_every_model_command_takes_the_switch(path):
    assert "--no-prefix-cache" in _parser_of(build_parser(), path)._option_string_actions


def test_commands_without_a_model_do_not():
    assert "--no-prefix-cache" not in _parser_of(build_parser(), ["index"])._option_string_actions


def test_switch_reaches_the_engine(monkeypatch, tmp_path):
    from engine.engine import Engine

    monkeypatch.setenv("CPM_PREFIX_CACHE", "1")  # recorded, so the "0" the command sets is undone afterwards
    # a missing model ends the command with one error line after the switch is applied
    assert cli_main(["generate", "hello", "--no-prefix-cache", "--model", str(tmp_path / "none.gguf")]) == 2
    assert os.environ["CPM_PREFIX_CACHE"] == "0"
    engine = Engine.load("smollm2-135m", device="cpu")
    assert engine.loop.scheduler.blocks.prefix_cache is False
    assert engine.generate("The capital of France is", max_tokens=2).cached_tokens == 0
