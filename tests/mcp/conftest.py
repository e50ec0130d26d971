"""Fixtures for the MCP tests: real servers as subprocesses and a temporary git repo."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mcp_test_entries import SQLITE_FIX, HttpServer, sqlite_executable


@pytest.fixture(scope="session")
def http_server():
    """A shared HTTP server for tests that leave it running (the crash test starts its own)."""
    server = HttpServer("--require-header", "X-Token=secret")
    yield server
    server.stop()


@pytest.fixture
def own_http_server():
    server = HttpServer()
    yield server
    server.stop()


@pytest.fixture
def git_repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    (repo / "hello.txt").write_text("hello\n")
    for cmd in (["init", "-q", "-b", "main"], ["add", "hello.txt"], ["commit", "-q", "-m", "first commit"]):
        subprocess.run(["git", *cmd], cwd=repo, env=env, check=True)
    (repo / "hello.txt").write_text("hello again\n")
    return repo


@pytest.fixture(scope="session")
def sqlite_server() -> Path:
    """The mcp-server-sqlite executable (see mcp_test_entries: it needs its own venv under mcp 2.x)."""
    exe = sqlite_executable()
    if exe is None:
        pytest.skip(f"mcp-server-sqlite with mcp<2 is not available and could not be built; run: {SQLITE_FIX}")
    return exe
