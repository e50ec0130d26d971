"""Assistant mode end to end: the real default model, a real MCP server (mcp-server-time), approval granted
and denied through the modal, and key presses answered while the engine generates."""
import asyncio
import sys
import time

from textual.widgets import TabbedContent

from tests.tui.test_tui_app import wait_for_group
from tui.app import CpmApp
from tui.screens.approval import ApprovalScreen
from tui.services import Services
from tui.settings import TuiSettings
from tui.widgets.assistant import ToolCallBlock


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
        # Approve: the tool runs and its result shows in the call's block.
        await pilot.click("#prompt")
        await pilot.press(*"What time is it in UTC?", "enter")
        await wait_for_screen(app, ApprovalScreen)
        assert app.screen.tool_name.startswith("time.")
        await pilot.press("y")
        # While the model writes its answer, the UI still answers key presses quickly: time from the key
        # press to its action running (not to the end of the repaint that follows).
        handled: list[float] = []
        toggle = app.action_toggle_theme
        monkeypatch.setattr(app, "action_toggle_theme", lambda: (handled.append(time.perf_counter()), toggle()))
        await asyncio.sleep(0.5)   # the tool has run; the model is generating its answer now
        assert any(w.group == "assistant" and w.is_running for w in app.workers), "the turn ended too soon to test"
        started = time.perf_counter()
        await pilot.press("f5")
        latency = handled[0] - started
        await wait_for_group(app, pilot, "assistant")
        blocks = list(app.query(ToolCallBlock))
        assert blocks and str(blocks[0].title)[0] in "✓✗"
        assert "result:" in str(blocks[0].body.render())
        assert latency < 0.1, f"key press took {latency * 1000:.0f} ms during generation"
        # Deny: the call never runs and the block says so.
        await pilot.click("#prompt")
        await pilot.press(*"And the time now?", "enter")
        await wait_for_screen(app, ApprovalScreen)
        await pilot.press("n")
        await wait_for_group(app, pilot, "assistant")
        denied = list(app.query(ToolCallBlock))[-1]
        assert "denied" in str(denied.title)
        assert app.query_one("#modes", TabbedContent).active == "assistant"
