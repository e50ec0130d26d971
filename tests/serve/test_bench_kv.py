"""`cpm bench kv`: a sequence holds only the pool blocks its tokens need (the real default model)."""
from __future__ import annotations

import json

import pytest

from tui.cli import main as cli_main


def test_bench_kv_blocks_follow_the_tokens(capsys):
    assert cli_main(["bench", "kv", "--max-seq-len", "512", "--lengths", "60,200", "--new-tokens", "4", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [run["blocks_held"] for run in r["runs"]] == [1, 4]  # 64 tokens -> 1 block, 204 -> 4 (block 64)
    per_token = r["kv_bytes_per_token"]
    assert r["runs"][0]["static_row_mb"] * 2**20 == per_token * 512
    assert 0 < r["runs"][0]["share_of_static_row"] < r["runs"][1]["share_of_static_row"] < 1


def test_bench_kv_rejects_lengths_past_the_context(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["bench", "kv", "--max-seq-len", "128", "--lengths", "200"])
    assert exit_.value.code == 2
    assert "--lengths" in capsys.readouterr().err
