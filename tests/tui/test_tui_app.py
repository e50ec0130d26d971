"""The whole app under `run_test()`: modes, bindings, settings, and clean errors without a backend."""
from textual.widgets import TabbedContent

from tui.app import CpmApp
from tui.widgets.assistant import AssistantPane
from tui.services import Services
from tui.settings import TuiSettings


async def wait_for_group(app, pilot, group: str, timeout: float = 600) -> None:
    """Wait until the workers of `group` are done (the MCP host worker runs for the app's lifetime)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await pilot.pause()
    while any(w.group == group and not w.is_finished for w in app.workers):
        assert loop.time() < deadline, f"workers of {group} still running after {timeout}s"
        await asyncio.sleep(0.1)
    await pilot.pause()


def screenshot(app, name: str) -> None:
    """With CPM_SCREENSHOTS=DIR, save the screen as DIR/name.svg (how docs/screenshots are made from real runs)."""
    import os

    if os.environ.get("CPM_SCREENSHOTS"):
        app.save_screenshot(f"{name}.svg", path=os.environ["CPM_SCREENSHOTS"])



async def test_mode_switch_and_theme_toggle():
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        assert app.query_one("#modes", TabbedContent).active == "assistant"
        await pilot.press("f2")
        assert app.query_one("#modes", TabbedContent).active == "survey"
        await pilot.press("f3")
        assert app.query_one("#modes", TabbedContent).active == "assistant"
        before = app.theme
        await pilot.press("f5")
        assert app.theme != before


async def test_failing_backend_shows_error_and_app_keeps_running(tmp_path, monkeypatch):
    # A server nobody listens on: the backend fails for real, the UI must say so and stay usable.
    monkeypatch.chdir(tmp_path)   # the sessions database goes under out/
    settings = TuiSettings(backend="openai", base_url="http://127.0.0.1:9/v1", model="none")
    app = CpmApp(settings, Services(settings))
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.click("#prompt")
        await pilot.press(*"hello", "enter")
        await wait_for_group(app, pilot, "assistant")
        assert any("backend error" in str(n.message) for n in app._notifications)
        await pilot.press("f2")
        await pilot.pause()
        assert app.query_one("#modes", TabbedContent).active == "survey"
        pane = app.query_one(AssistantPane)
        await pilot.press("ctrl+q")  # quitting waits until the session's SQLite checkpointer has closed
    assert pane._host_worker.is_finished and pane.host.closing.is_set()


async def test_survey_without_index_explains_what_to_do():
    app = CpmApp(TuiSettings())
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f2")
        app.query_one("#topic").value = "speculative decoding"
        await pilot.click("#write")
        await wait_for_group(app, pilot, "survey")
        assert any("no index directory" in str(n.message) for n in app._notifications)


def test_rate_meter_counts_from_the_first_token(monkeypatch):
    import tui.widgets as widgets

    now = iter([100.0, 101.0, 101.2, 102.0, 103.0])   # first token at 100 s (after a long load), then 4 more
    monkeypatch.setattr(widgets.time, "monotonic", lambda: next(now))
    meter = widgets.RateMeter(every=0.5)
    assert meter.tick() is None                        # the first token starts the clock
    assert meter.tick().rate == 1.0                    # 1 token in 1 s
    assert meter.tick() is None                        # 0.2 s after the last update: no repaint
    assert meter.tick().rate == 1.5                    # 3 tokens in 2 s
    final = meter.final()
    assert final.done and final.rate == 1.0            # 3 tokens in 3 s


async def test_telemetry_block_shows_steps_and_total():
    from textual.app import App

    from tui.widgets.telemetry import TelemetryBlock

    step = {"prompt_tokens": 100, "generated_tokens": 20, "prefill_s": 0.1, "decode_s": 0.5, "generations": 1,
            "spec_drafted": 10, "spec_accepted": 5, "attention": "dense", "kv_tokens": 120, "kv_capacity": 1024}
    telemetry = {"steps": [dict(step, step=1), dict(step, step=2)],
                 "total": dict(step, prompt_tokens=200, generated_tokens=40, prefill_s=0.2, decode_s=1.0,
                               generations=2, spec_drafted=20, spec_accepted=10)}

    class Host(App):
        def compose(self):
            yield TelemetryBlock(telemetry)

    async with Host().run_test() as pilot:
        block = pilot.app.query_one(TelemetryBlock)
        assert "2 steps" in str(block.title) and "200 in / 40 out" in str(block.title) and block.collapsed
        table = str(block.query_one(".telemetry-table").render())
        assert "total" in table and "50%" in table  # speculative acceptance of the steps


async def test_reasoning_block_streams_apart_and_collapsed():
    from textual.app import App

    from tui.widgets.telemetry import ReasoningBlock

    class Host(App):
        def compose(self):
            yield ReasoningBlock()

    async with Host().run_test() as pilot:
        block = pilot.app.query_one(ReasoningBlock)
        for piece in ("The user wants ", "the time; ", "call the tool."):
            block.append(piece)
        await pilot.pause()
        assert block.collapsed and str(block.body.render()) == "The user wants the time; call the tool."
