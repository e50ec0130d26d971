"""Config parsing: both transports, ${ENV} expansion, the spellings other clients use, and clear errors."""
import json

import pytest

from mcp_client.config import HttpServer, StdioServer, expand_env, find_config, load_config, parse_config
from mcp_client.errors import MCPError


def test_stdio_and_http_entries_parse(tmp_path):
    (tmp_path / "work").mkdir()
    servers = parse_config({"mcpServers": {
        "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}, "cwd": "work"},
        "web": {"url": "https://example.org/mcp", "headers": {"Authorization": "Bearer x"}, "timeout": 5},
        "off": {"command": "x", "disabled": True},
        "typed": {"type": "streamableHttp", "url": "http://127.0.0.1:1/mcp"},
    }}, base_dir=tmp_path)
    assert set(servers) == {"time", "web", "typed"}
    time = servers["time"]
    assert isinstance(time, StdioServer) and time.args == ["mcp-server-time"] and time.env == {"TZ": "UTC"}
    assert time.cwd == str(tmp_path / "work")    # relative cwd is beside the config file
    web = servers["web"]
    assert isinstance(web, HttpServer) and web.headers["Authorization"] == "Bearer x" and web.timeout == 5


def test_env_expansion_everywhere_with_defaults():
    env = {"TOKEN": "s3cret", "ROOT": "/srv"}
    servers = parse_config({"mcpServers": {
        "a": {"command": "${ROOT}/bin/server", "args": ["--db", "${DB:-/tmp/x.db}"], "env": {"K": "${TOKEN}"}},
        "b": {"url": "http://${HOST:-localhost}:8000/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
    }}, env=env)
    assert servers["a"].command == "/srv/bin/server" and servers["a"].args == ["--db", "/tmp/x.db"]
    assert servers["a"].env == {"K": "s3cret"}
    assert servers["b"].url == "http://localhost:8000/mcp" and servers["b"].headers["Authorization"] == "Bearer s3cret"


def test_unset_env_variable_names_variable_and_server():
    with pytest.raises(MCPError, match=r"mcpServers\.gh: environment variable GITHUB_TOKEN is not set"):
        parse_config({"mcpServers": {"gh": {"url": "https://x/mcp",
                                            "headers": {"Authorization": "${GITHUB_TOKEN}"}}}}, env={})
    assert expand_env("a${X}b", {"X": "1"}) == "a1b"


@pytest.mark.parametrize("raw, message", [
    ({}, "mcpServers"),
    ({"mcpServers": []}, "mcpServers"),
    ({"mcpServers": {"a": "python"}}, "expected an object"),
    ({"mcpServers": {"a": {}}}, "missing 'command'"),
    ({"mcpServers": {"a": {"command": "x", "url": "http://h/mcp"}}}, "not both"),
    ({"mcpServers": {"a": {"url": "ftp://h"}}}, "http:// or https://"),
    ({"mcpServers": {"a": {"command": "x", "args": "y"}}}, "'args' must be a list"),
    ({"mcpServers": {"a.b": {"command": "x"}}}, "without dots"),
    ({"mcpServers": {"a": {"command": "x", "timeout": 0}}}, "positive number"),
    ({"mcpServers": {"a": {"type": "sse", "url": "http://h/sse"}}}, "SSE transport is not supported"),
    ({"mcpServers": {"a": {"command": "x", "cwd": "/no/such/dir"}}}, "not a directory"),
])
def test_bad_entries_say_what_is_wrong(raw, message):
    with pytest.raises(MCPError, match=message):
        parse_config(raw)


def test_load_config_file_errors(tmp_path, monkeypatch):
    with pytest.raises(MCPError, match="not found"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mcpServers": {\n  "a": }')
    with pytest.raises(MCPError, match="invalid JSON at line 2"):
        load_config(bad)
    good = tmp_path / "mcp.json"
    good.write_text(json.dumps({"mcpServers": {"t": {"command": "x"}}}))
    assert list(load_config(good)) == ["t"]
    monkeypatch.setenv("CPM_MCP_CONFIG", str(good))
    assert find_config(None) == good and find_config(bad) == bad


@pytest.mark.parametrize("entry, message", [
    ({"command": "x", "args": "y"}, "'args' must be a list of strings"),
    ({"command": "x", "args": [{"a": 1}]}, "'args' must be a list of strings (at 0)"),
    ({"command": "x", "timeout": float("nan")}, "'timeout' must be a positive number"),
    ({"command": "x", "timeout": 0}, "'timeout' must be a positive number"),
    ({"command": "x", "timeout": True}, "'timeout' must be a positive number"),
    ({"command": "x", "env": {"A": [1]}}, "'env' must be an object of strings (at A)"),
    ({"command": ""}, "'command' must be a non-empty string"),
    ({"url": 5}, "'url' must be a string"),
])
def test_wrong_types_name_the_key(entry, message):
    """The entry's pydantic model (ServerEntry) refuses wrong types with the key, not a traceback later."""
    with pytest.raises(MCPError) as err:
        parse_config({"mcpServers": {"a": entry}})
    assert message in str(err.value) and str(err.value).startswith("mcpServers.a: ")
