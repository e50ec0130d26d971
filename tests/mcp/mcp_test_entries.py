"""Config entries and launchers for the real MCP servers the tests use: our own test server (stdio and
streamable HTTP) and the PyPI servers mcp-server-time, -git and -sqlite."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEST_SERVER = HERE / "mcp_test_server.py"
BIN = Path(sys.executable).parent


def own_server_entry(**extra) -> dict:
    """Config entry for our own test server over stdio."""
    return {"command": sys.executable, "args": [str(TEST_SERVER)], **extra}


def time_entry() -> dict:
    return {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}


def git_entry(repo: Path) -> dict:
    return {"command": sys.executable, "args": ["-m", "mcp_server_git", "--repository", str(repo)]}


# mcp-server-sqlite's last release (2025.4.25) uses the mcp 1.x server API, which mcp 2.x removed, so it runs
# from its own small venv with mcp<2 (which also tests our 2.x client against a 1.x server).
SQLITE_VENV = Path(os.environ.get("CPM_MCP_SQLITE_VENV", Path.home() / ".cache" / "cpm-suite" / "mcp-sqlite"))
SQLITE_FIX = (f"{sys.executable} -m venv {SQLITE_VENV} && "
              f"{SQLITE_VENV}/bin/pip install mcp-server-sqlite==2025.4.25 'mcp<2'")


def sqlite_executable(build: bool = True) -> Path | None:
    """mcp-server-sqlite that works: its own venv (built once, from the package registry, when missing)."""
    exe = SQLITE_VENV / "bin" / "mcp-server-sqlite"
    if not exe.exists() and build:
        subprocess.run(SQLITE_FIX, shell=True, capture_output=True, timeout=600)
    return exe if exe.exists() else None


def sqlite_entry(exe: Path, db: Path) -> dict:
    return {"command": str(exe), "args": ["--db-path", str(db)]}


def project_sqlite_entry(db: Path) -> dict:
    """mcp-server-sqlite as installed beside our interpreter (broken under mcp 2.x: a real failing server)."""
    return {"command": str(BIN / "mcp-server-sqlite"), "args": ["--db-path", str(db)]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpServer:
    """Our test server over streamable HTTP on 127.0.0.1, as a subprocess."""

    def __init__(self, *extra: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc = subprocess.Popen([sys.executable, str(TEST_SERVER), "--http", "--port", str(self.port), *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"test HTTP server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("test HTTP server did not start listening within 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
