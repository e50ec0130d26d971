"""The assistant on the default model with a real mcp-server-time, tool_choice auto (the `cpm chat` default):
"What time is it now in Tokyo?" gets one get_current_time call carrying a valid IANA zone, and an answer that
quotes the time the tool returned (issue 30)."""
from __future__ import annotations

import json
import re
import zoneinfo

import pytest

from mcp_test_entries import time_entry

from agents.events import Answer, ToolCall, ToolResult
from agents.tools.configuration import Configuration
from agents.tools.session import ToolSession
from mcp_client import MCPManager


@pytest.fixture(scope="module")
def chat(smollm2_path):
    from agents.chat import ChatEngine

    return ChatEngine.from_model(str(smollm2_path), device="cpu")


@pytest.mark.slow  # two generations on the real model (about 1 min on an idle 2-core machine)
async def test_tokyo_time_in_auto_mode(chat, tmp_path):
    async with MCPManager({"mcpServers": {"time": time_entry()}}) as mcp:
        settings = Configuration(approve="never", max_tokens=64)
        async with ToolSession(model=chat, mcp=mcp, db_path=tmp_path / "s.db", settings=settings) as session:
            events = [e async for e in session.ask("What time is it now in Tokyo?")]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [c.name for c in calls] == ["time.get_current_time"], events
    assert calls[0].args["timezone"] in zoneinfo.available_timezones()
    result = next(e for e in events if isinstance(e, ToolResult))
    assert not result.is_error, result
    when = json.loads(result.text)["datetime"]           # e.g. 2026-12-08T08:19:44+09:00
    hour_minute = re.search(r"T(\d\d:\d\d)", when).group(1)
    answer = events[-1]
    assert isinstance(answer, Answer)
    assert hour_minute in answer.text, (when, answer.text)
    assert "<tool_response>" not in answer.text and "<tool_call>" not in answer.text
