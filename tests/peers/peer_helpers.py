"""Helpers shared by the peers tests: start a peer or skip with the reason, run `cpm` as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.peers.servers import Server, missing

REPO = Path(__file__).resolve().parents[2]
TOPIC = "efficient inference of language models"


def start_peer(kind: str, logs: Path) -> Server:
    reason = missing(kind)
    if reason:
        pytest.skip(reason)
    return Server(kind, logs, parallel=4)


def cpm(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={"CPM_TIMEOUT": "600", **os.environ, "HF_HUB_OFFLINE": "1"})  # a loaded box
    assert proc.returncode == 0, \
        f"cpm {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc
