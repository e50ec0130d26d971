"""MCPManager against real servers: mcp-server-time, -git (temporary repo), -sqlite, and our own test server
over streamable HTTP; tools listed and namespaced, calls checked, resources and prompts listed."""
import json

from mcp_test_entries import git_entry, own_server_entry, sqlite_entry, time_entry

from mcp_client import MCPManager


async def test_time_git_sqlite_together(tmp_path, git_repo, sqlite_server):
    db = tmp_path / "shop.db"
    config = {"mcpServers": {"time": time_entry(), "git": git_entry(git_repo), "db": sqlite_entry(sqlite_server, db)}}
    async with MCPManager(config) as mcp:
        assert {s.name: s.state for s in mcp.servers()} == {"time": "ready", "git": "ready", "db": "ready"}
        names = {t.name for t in await mcp.list_tools()}
        assert {"time.get_current_time", "time.convert_time", "git.git_status", "git.git_log",
                "db.read_query", "db.write_query", "db.create_table"} <= names

        now = await mcp.call("time.get_current_time", {"timezone": "Europe/Paris"})
        assert not now.is_error and json.loads(now.text)["timezone"] == "Europe/Paris"
        assert now.structured["timezone"] == "Europe/Paris"    # the server's structuredContent is kept
        conv = await mcp.call("time.convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                    "target_timezone": "Asia/Tokyo"})
        assert not conv.is_error and "21:00" in conv.text
        bad_zone = await mcp.call("time.get_current_time", {"timezone": "Mars/Olympus"})
        assert bad_zone.is_error and "Mars/Olympus" in bad_zone.text

        log = await mcp.call("git.git_log", {"repo_path": str(git_repo)})
        assert not log.is_error and "first commit" in log.text
        status = await mcp.call("git.git_status", {"repo_path": str(git_repo)})
        assert "hello.txt" in status.text

        assert not (await mcp.call("db.create_table", {"query": "CREATE TABLE items (name TEXT, qty INT)"})).is_error
        assert not (await mcp.call("db.write_query", {"query": "INSERT INTO items VALUES ('pen', 3)"})).is_error
        rows = await mcp.call("db.read_query", {"query": "SELECT name, qty FROM items"})
        assert not rows.is_error and "pen" in rows.text and "3" in rows.text
        sql_error = await mcp.call("db.read_query", {"query": "SELECT * FROM nowhere"})
        assert "no such table: nowhere" in sql_error.text   # this server reports SQL errors as plain text

        # mcp-server-sqlite offers a memo resource and a demo prompt.
        assert any(r.server == "db" and r.uri.startswith("memo://") for r in await mcp.list_resources())
        assert any(p.server == "db" and p.name == "mcp-demo" for p in await mcp.list_prompts())


async def test_http_server_with_headers_and_content_kinds(http_server):
    config = {"mcpServers": {"web": {"url": http_server.url, "headers": {"X-Token": "secret"}},
                             "nokey": {"url": http_server.url}}}
    async with MCPManager(config) as mcp:
        states = {s.name: s for s in mcp.servers()}
        assert states["web"].state == "ready" and states["web"].transport == "http"
        # The server refuses requests without the header: reported for that server only.
        assert states["nokey"].state == "failed" and http_server.url in states["nokey"].error
        assert (await mcp.call("web.add", {"a": 2, "b": 40})).text == "42"
        weather = await mcp.call("web.weather", {"city": "Oslo"})
        assert json.loads(weather.text) == {"city": "Oslo", "temperature_c": 21, "sky": "clear"}
        image = await mcp.call("web.image")
        assert not image.is_error and image.text.startswith("[image: image/png")
        failed = await mcp.call("web.fail", {"reason": "for the test"})
        assert failed.is_error and "failed for the test" in failed.text
        assert [r.uri for r in await mcp.list_resources()] == ["test://readme"]
        assert [(p.name, p.arguments) for p in await mcp.list_prompts()] == [("summarize", ["topic"])]


async def test_stdio_env_and_cwd_reach_the_server(tmp_path):
    config = {"mcpServers": {"t": own_server_entry(env={"CPM_TEST_WHO": "${USER_FOR_TEST:-alice}"},
                                                     cwd=str(tmp_path))}}
    async with MCPManager(config) as mcp:
        assert (await mcp.call("t.whoami")).text == f"alice in {tmp_path}"
        # A bare tool name is accepted when one server has it (small models drop prefixes).
        assert (await mcp.call("echo", {"text": "hi"})).text == "hi"
