"""Assistant mode end to end: the real default model, a real MCP server (mcp-server-time), approval granted
and denied through the modal, key presses answered while the engine generates, sessions resumed from the list,
and MCP servers that fail or crash."""
import asyncio
import json
import sys
import time

from textual.widgets import TabbedContent

from tests.tui.test_tui_app import screenshot, wait_for_group
from tui.app import CpmApp
from tui.screens.approval import ApprovalScreen
from tui.services import Services
from tui.settings import TuiSettings
from tui.widgets.assistant import AssistantPane, ChatMessage, ToolCallBlock
from tui.widgets.telemetry import TelemetryBlock


async def wait_for_screen(app, kind, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not isinstance(app.screen, kind):
        assert time.monotonic() < deadline, f"no {kind.__name__} after {timeout}s"
        await asyncio.sleep(0.05)


async def test_tool_call_approved_then_denied(smollm2_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # sessions database under out/
    config = tmp_path / "mcp.json"
    config.write_text('{"mcpServers": {"time": {"command": "%s", "args": ["-m", "mcp_server_time", '
                      '"--local-timezone", "UTC"]}}}' % sys.executable)
    # tool_choice=required: a 135M model rarely calls on its own; forced, its call is grammar-constrained.
    settings = TuiSettings(mcp_config=str(config), approve="always", tool_choice="required", max_tokens=48)
    app = CpmApp(settings, Services(settings))
    async with app.run_test(size=(140, 45)) as pilot:
        # While the model works on the question, the UI still handles key presses: the action runs while the
        # turn's worker is still generating, not after it (how fast is a benchmark's business, not a test's).
        def generating() -> bool:
            return any(w.group == "assistant" and w.is_running for w in app.workers)

        handled: list[bool] = []
        toggle = app.action_toggle_theme
        monkeypatch.setattr(app, "action_toggle_theme", lambda: (handled.append(generating()), toggle()))
        await pilot.click("#prompt")
        await pilot.press(*"What time is it in UTC?", "enter")
        assert generating(), "the turn did not start"
        await pilot.press("f5")   # at once: the model is reading the prompt (tool schemas included) or calling
        assert handled == [True], "the key press waited for the model"
        # Approve: the tool runs and its result shows in the call's block.
        await wait_for_screen(app, ApprovalScreen)
        assert app.screen.tool_name.startswith("time.")
        await pilot.press("y")
        await wait_for_group(app, pilot, "assistant")
        blocks = list(app.query(ToolCallBlock))
        assert blocks and str(blocks[0].title)[0] in "✓✗"
        assert "result:" in str(blocks[0].body.render())
        # The turn's engine telemetry: collapsed, one row per model call plus the total.
        telemetry = list(app.query(TelemetryBlock))
        assert telemetry and "steps" in str(telemetry[-1].title) and telemetry[-1].collapsed
        # Deny: the call never runs and the block says so.
        await pilot.click("#prompt")
        await pilot.press(*"And the time now?", "enter")
        await wait_for_screen(app, ApprovalScreen)
        await pilot.press("n")
        await wait_for_group(app, pilot, "assistant")
        denied = list(app.query(ToolCallBlock))[-1]
        assert "denied" in str(denied.title)
        assert app.query_one("#modes", TabbedContent).active == "assistant"
        screenshot(app, "assistant")
        # Sessions: start a new one, then resume this one from the list; its history and messages come back.
        host = app.query_one(AssistantPane).host
        first = host.session.session_id
        await pilot.press("f6", "enter")           # first row: a new session
        await pilot.pause()
        assert host.session.session_id != first and not list(app.query(ToolCallBlock))
        await pilot.press("f6")
        keys = [key for key, _ in app.screen.rows]
        await pilot.press(*["down"] * keys.index(first), "enter")
        await pilot.pause()
        assert host.session.session_id == first
        questions = [m._markdown for m in app.query(ChatMessage) if m.role == "user"]
        assert questions == ["What time is it in UTC?", "And the time now?"]
        assert len(list(app.query(ToolCallBlock))) == 2
        assert len(await host.session.history()) >= 6   # the checkpointed conversation the next turn continues


async def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_server_that_fails_or_crashes_is_notified(smollm2_path, tmp_path, monkeypatch):
    """Real servers: one that never starts, and the tests' own server killed by its `crash` tool. Each shows
    an error notification and its state in the panel; the app keeps running and the next turn restarts it."""
    from pathlib import Path

    own = Path(__file__).resolve().parents[1] / "mcp" / "mcp_test_server.py"
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {
        "t": {"command": sys.executable, "args": [str(own)]},
        "broken": {"command": sys.executable, "args": ["-c", "raise SystemExit(1)"]}}}))
    settings = TuiSettings(mcp_config=str(config))
    app = CpmApp(settings, Services(settings))
    async with app.run_test(size=(140, 45)) as pilot:
        pane = app.query_one(AssistantPane)
        host = await pane._host()          # what the first question does: model, servers, session
        messages = lambda: [str(n.message) for n in app._notifications]   # noqa: E731
        await wait_until(lambda: any("MCP server broken failed" in m for m in messages()))
        labels = lambda: [str(n.label) for n in app.query_one("#servers").root.children]   # noqa: E731
        assert any("t: ready" in label for label in labels()), labels()
        crashed = await host.mcp.call("t.crash")
        assert crashed.is_error
        await wait_until(lambda: any("MCP server t crashed" in m for m in messages()))
        await wait_until(lambda: any("t: crashed" in label for label in labels()))
        host.tools = await host.mcp.list_tools()   # as the next turn does: the crashed server is restarted
        await wait_until(lambda: any("t: ready" in label for label in labels()))
        # Saved settings stop this host; the next question starts one with them, in the same session.
        session = host.session.session_id
        await pilot.press("f4")
        await pilot.click("#save")
        await pilot.pause()
        pane = app.query_one(AssistantPane)
        assert pane.host is None and pane.session_id == session
        await pilot.press("f2")
        assert app.query_one("#modes", TabbedContent).active == "survey"
