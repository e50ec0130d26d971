"""Secrets stay out of what cpm prints: values from ${ENV} in args or url, and token-looking URL query values, are
`***` in `cpm mcp servers` (table and --json), tool listings' errors, call errors and error ToolResults; and
`cpm mcp call` starts only the server it calls. Real servers as subprocesses, real CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mcp_test_entries import time_entry

SECRET = "sk-live-0123456789abcdef"
ECHO_AND_DIE = "import sys; print('refused token ' + sys.argv[1], file=sys.stderr); sys.exit(3)"


@pytest.fixture
def leaky_config(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {
        "time": time_entry(),
        # a stdio server given the secret on its command line, which echoes it while failing
        "echo": {"command": sys.executable, "args": ["-c", ECHO_AND_DIE, "${CPM_TEST_SECRET}"]},
        # an HTTP server nobody runs, the secret in its URL (by ${ENV}) and a literal token in another
        "api": {"url": "http://127.0.0.1:9/mcp?api_key=${CPM_TEST_SECRET}&region=eu"},
        "jwt": {"url": "http://127.0.0.1:9/mcp?t=eyJhbGciOiJIUzI1NiJ9abc123DEF456"},
    }}))
    return path


def cpm(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CPM_TEST_SECRET": SECRET, "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=180,
                          env=env)


@pytest.mark.parametrize("argv", [
    ["mcp", "servers"], ["mcp", "servers", "--json"], ["mcp", "tools"], ["mcp", "tools", "--json"],
    ["mcp", "tools", "echo"], ["mcp", "call", "echo.anything"], ["mcp", "call", "api.anything"],
], ids=["servers", "servers-json", "tools", "tools-json", "tools-one", "call-stdio", "call-http"])
def test_no_secret_in_any_listing_or_error(leaky_config, argv):
    out = cpm(*argv, "--mcp", str(leaky_config))
    both = out.stdout + out.stderr
    assert SECRET not in both and "eyJhbGciOiJIUzI1NiJ9abc123DEF456" not in both, both
    assert "Traceback" not in both
    if argv[1] == "servers":
        assert both.count("***") >= 3, both  # echo's command line, api's and jwt's URLs
        assert "region=eu" in both  # only the secret goes, not the rest of the URL


def test_error_tool_results_are_redacted():
    import anyio

    from mcp_client.config import parse_config
    from mcp_client.manager import MCPManager

    config = parse_config({"mcpServers": {
        "echo": {"command": sys.executable, "args": ["-c", ECHO_AND_DIE, "${CPM_TEST_SECRET}"]}}},
        env={"CPM_TEST_SECRET": SECRET})
    assert SECRET not in repr(config) and "***" in config["echo"].where

    async def go():
        async with MCPManager(config, connect_timeout=20) as mcp:
            status = mcp.servers()[0]
            result = await mcp.call("echo.anything", {})
        return status, result

    status, result = anyio.run(go)
    assert status.state == "failed" and "refused token ***" in status.error, status
    assert result.is_error and SECRET not in result.text


def test_config_errors_do_not_quote_secrets(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"bad": {"url": "ftp://${CPM_TEST_SECRET}@host"}}}))
    out = cpm("mcp", "servers", "--mcp", str(path))
    assert out.returncode == 2 and SECRET not in out.stderr and "***" in out.stderr


def test_call_starts_only_the_named_server(tmp_path):
    started = tmp_path / "other-started"
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {
        "time": time_entry(),
        "other": {"command": sys.executable, "args": ["-c", f"open({str(started)!r}, 'w').close()"]}}}))
    out = cpm("mcp", "call", "--mcp", str(path), "time.get_current_time", '{"timezone": "UTC"}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["timezone"] == "UTC"
    assert not started.exists(), "cpm mcp call started a server it did not call"


def test_http_client_logs_are_redacted(caplog):
    """The HTTP client logs each request's URL at INFO; a URL holding a ${ENV} secret must not reach the log."""
    import logging

    import anyio

    from mcp_client.config import parse_config
    from mcp_client.manager import MCPManager

    config = parse_config({"mcpServers": {"api": {"url": "http://127.0.0.1:9/mcp?key=${CPM_TEST_SECRET}"}}},
                          env={"CPM_TEST_SECRET": SECRET})

    async def go():
        async with MCPManager(config, connect_timeout=10) as mcp:
            return mcp.servers()[0]

    with caplog.at_level(logging.DEBUG):
        status = anyio.run(go)
    assert status.state == "failed"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged, logged
