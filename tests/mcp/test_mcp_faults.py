"""Fault tests: a server that crashes mid-call (stdio and HTTP), one that hangs past the timeout, one that
returns a huge result, one that never starts, unknown tools. Each time the session goes on and the result
says what happened."""
import sys
import time

import pytest

from mcp_test_entries import own_server_entry, project_sqlite_entry, time_entry

from mcp_client import MCPManager
from mcp_client.errors import MCPError


async def test_crash_mid_call_is_reported_and_server_restarts():
    async with MCPManager({"mcpServers": {"t": own_server_entry(), "time": time_entry()}}) as mcp:
        crashed = await mcp.call("t.crash")
        assert crashed.is_error and "crashed during the call" in crashed.text
        assert "crashing on purpose" in crashed.text          # the server's last stderr line explains it
        status = {s.name: s for s in mcp.servers()}
        assert status["t"].state == "crashed" and status["time"].state == "ready"
        assert not (await mcp.call("time.get_current_time", {"timezone": "UTC"})).is_error
        again = await mcp.call("t.echo", {"text": "back"})      # next use restarts it
        assert not again.is_error and again.text == "back"
        status = {s.name: s for s in mcp.servers()}
        assert status["t"].state == "ready" and status["t"].restarts == 1


async def test_http_server_that_dies_is_reported(own_http_server):
    async with MCPManager({"mcpServers": {"web": {"url": own_http_server.url}}}) as mcp:
        crashed = await mcp.call("web.crash")
        assert crashed.is_error and "web" in crashed.text
        after = await mcp.call("web.echo", {"text": "x"})      # nobody restarts a remote server: say so
        assert after.is_error and own_http_server.url in after.text


async def test_hang_past_timeout_then_session_goes_on():
    async with MCPManager({"mcpServers": {"t": own_server_entry()}}, call_timeout=1.5) as mcp:
        started = time.monotonic()
        hung = await mcp.call("t.hang")
        assert hung.is_error and "did not answer within 1.5s" in hung.text and "still answering" in hung.text
        assert time.monotonic() - started < 10
        assert (await mcp.call("t.echo", {"text": "still here"})).text == "still here"


async def test_huge_result_is_truncated_with_a_note():
    async with MCPManager({"mcpServers": {"t": own_server_entry()}}, max_result_chars=1000) as mcp:
        big = await mcp.call("t.huge", {"chars": 3_000_000})
        assert not big.is_error and big.truncated
        assert big.text.startswith("x" * 1000) and "first 1,000 of 3,000,000 characters" in big.text
        assert len(big.text) < 1200


async def test_unknown_names_and_bad_arguments_come_back_as_text():
    async with MCPManager({"mcpServers": {"t": own_server_entry()}}) as mcp:
        for name, args, expected in [("t.ech", {"text": "a"}, "did you mean 'echo'"),
                                     ("nosuch.tool", {}, "unknown server 'nosuch'"),
                                     ("frobnicate", {}, "unknown tool 'frobnicate'"),
                                     ("t.add", {"a": 1}, "'b' is a required property"),
                                     ("t.add", {"a": "one", "b": 2}, "a: 'one' is not of type 'integer'"),
                                     ("t.add", "{not json", "not valid JSON")]:
            result = await mcp.call(name, args)
            assert result.is_error and expected in result.text, (name, result.text)
        with pytest.raises(MCPError, match="unknown server"):
            mcp.resolve("nosuch.tool")
        assert (await mcp.call("t.add", '{"a": 1, "b": 2}')).text == "3"   # JSON-string arguments are fine


async def test_servers_that_cannot_start_do_not_stop_the_others(tmp_path):
    import importlib.metadata

    config = {"mcpServers": {
        "time": time_entry(),
        "missing": {"command": "/no/such/mcp-server"},
        "silent": {"command": sys.executable, "args": ["-c", "import time; time.sleep(60)"]},
    }}
    if int(importlib.metadata.version("mcp").split(".")[0]) >= 2:
        # The PyPI mcp-server-sqlite uses the mcp 1.x server API: a real server that dies at startup.
        config["mcpServers"]["oldsql"] = project_sqlite_entry(tmp_path / "x.db")
    async with MCPManager(config, connect_timeout=6) as mcp:
        status = {s.name: s for s in mcp.servers()}
        assert status["time"].state == "ready"
        assert status["missing"].state == "failed" and "command not found" in status["missing"].error
        assert status["silent"].state == "failed" and "within 6s" in status["silent"].error
        if "oldsql" in status:
            assert status["oldsql"].state == "failed" and "list_resources" in status["oldsql"].error
        assert [t.server for t in await mcp.list_tools()] == ["time", "time"]
        result = await mcp.call("missing.anything")
        assert result.is_error and "missing" in result.text
