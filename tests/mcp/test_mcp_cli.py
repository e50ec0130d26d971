"""`cpm mcp servers|tools|call`: results printed, user mistakes one line with exit 2, tool errors exit 1."""
import json
import subprocess
import sys

import pytest

from mcp_test_entries import own_server_entry, time_entry


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"time": time_entry(), "t": own_server_entry()}}))
    return path


def cpm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True, timeout=180)


def test_servers_and_tools_json(config_file):
    out = cpm("mcp", "servers", "--mcp", str(config_file), "--json")
    assert out.returncode == 0, out.stderr
    assert {r["name"]: r["state"] for r in json.loads(out.stdout)} == {"time": "ready", "t": "ready"}
    out = cpm("mcp", "tools", "--mcp", str(config_file), "--json", "time")
    assert out.returncode == 0, out.stderr
    assert [t["name"] for t in json.loads(out.stdout)] == ["time.get_current_time", "time.convert_time"]


def test_call_prints_the_result(config_file):
    out = cpm("mcp", "call", "--mcp", str(config_file), "time.get_current_time", '{"timezone": "Asia/Tokyo"}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["timezone"] == "Asia/Tokyo"
    out = cpm("mcp", "call", "--mcp", str(config_file), "t.fail")
    assert out.returncode == 1 and "failed on purpose" in out.stdout and "reported an error" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["nosuch.tool", "{}"], "unknown server 'nosuch'; configured servers: time, t"),
    (["time.current_time", "{}"], "did you mean 'get_current_time'"),
    (["time.get_current_time", "{timezone: UTC}"], "JSON-ARGS is not valid JSON"),
    (["time.get_current_time", "{}"], "'timezone' is a required property"),
])
def test_call_mistakes_are_one_line_exit_2(config_file, args, message):
    out = cpm("mcp", "call", "--mcp", str(config_file), *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_missing_config_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("CPM_MCP_CONFIG", str(tmp_path / "nope.json"))
    out = cpm("mcp", "servers")
    assert out.returncode == 2 and "not found" in out.stderr
