"""Per-step engine telemetry on the real default model: each step's decode tokens are the tokens the engine
generated, totals are the sums of the steps, and the tool session and its transcript carry them."""
from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage

from agents.chat.telemetry import StepTelemetry, stats_table, summary, total

ADDITIVE = ("prompt_tokens", "cached_tokens", "generated_tokens", "prefill_s", "decode_s", "generations", "spec_drafted",
            "spec_accepted")


class RecordingEngine:
    """The real engine, with every GenerationResult it returns kept for the test to compare against."""

    def __init__(self, engine):
        self.engine, self.results = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, prompt, params=None):
        result = self.engine.generate(prompt, params)
        self.results.append(result)
        return result


@pytest.fixture(scope="module")
def recorded(smollm2_path):
    from agents.chat import ChatEngine
    from engine import Engine

    engine = RecordingEngine(Engine.load("smollm2-135m", max_seq_len=1024))
    return ChatEngine(engine=engine, model_name="smollm2-135m", max_tokens=6), engine


def test_telemetry_decode_tokens_equal_generated_tokens_and_totals_sum(recorded):
    chat, engine = recorded
    replies = [chat.invoke([HumanMessage("Name a colour.")]),
               chat.invoke([HumanMessage("Name a fruit.")], reasoning="think", max_reasoning_tokens=5)]
    steps = [r.response_metadata["telemetry"] for r in replies]
    plain, think = engine.results[:1], engine.results[1:]
    assert len(think) == 2  # reasoning, then the answer
    for step, results, reply in zip(steps, (plain, think), replies):
        generated = sum(len(r.token_ids) for r in results)
        assert step["generated_tokens"] == generated == reply.usage_metadata["output_tokens"]
        assert step["prompt_tokens"] == sum(r.prompt_tokens for r in results)
        assert step["decode_s"] == pytest.approx(sum(r.decode_s for r in results))
        assert step["generations"] == len(results) and step["attention"] in ("dense", "sparse", "dense+sparse")
        assert step["kv_capacity"] == 1024 and 0 < step["kv_use"] <= 1
    tot = summary(steps)["total"]
    for key in ADDITIVE:
        assert tot[key] == pytest.approx(sum(s[key] for s in steps)), key
    assert tot["kv_tokens"] == max(s["kv_tokens"] for s in steps)
    table = stats_table(steps).splitlines()
    assert len(table) == 2 + len(steps) + 2 and table[-1].split()[:4] == [
        "total", str(tot["prompt_tokens"]), str(tot["cached_tokens"]), str(tot["generated_tokens"])]


def test_telemetry_speculative_fields_when_the_engine_reports_them():
    """The engine's speculative stats (result.spec) and an attention mode on the result are picked up."""
    from engine import GenerationResult
    from engine.speculative.decode import SpecStats

    result = GenerationResult("ab", [1, 2, 3], "stop", 10, 3, 0.5, 0.25, spec=SpecStats("prompt-lookup", 2, 8, 6))
    result.attention_mode = "sparse"
    step = StepTelemetry.from_result(result, kv_capacity=100)
    assert step.acceptance == 0.75 and step.attention == "sparse" and step.kv_use == 0.13
    both = total([step, StepTelemetry.from_result(GenerationResult("a", [1], "stop", 4, 1, 0.1, 0.0), 100)])
    assert both.attention == "dense+sparse" and both.spec_drafted == 8 and both.generated_tokens == 4


@pytest.mark.slow
async def test_telemetry_in_tool_session_and_transcript(recorded, tmp_path):
    """A forced call then an answer on the real model and mcp-server-time: two step events, summed in the answer."""
    import sys

    from agents.tools.configuration import Configuration
    from agents.events import Answer, ModelStep
    from agents.tools.session import ToolSession
    from agents.tools.transcript import Transcript
    from mcp_client import MCPManager

    chat, _ = recorded
    servers = {"mcpServers": {"time": {"command": sys.executable,
                                       "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}}}
    async with MCPManager(servers) as mcp:
        settings = Configuration(approve="never", tool_choice="required", max_steps=2, max_tokens=24)
        async with ToolSession(model=chat, mcp=mcp, db_path=tmp_path / "s.db", settings=settings) as session:
            events = [e async for e in session.ask("What time is it in UTC?")]
            session_id = session.session_id
    steps = [e for e in events if isinstance(e, ModelStep)]
    answer = events[-1]
    assert isinstance(answer, Answer)
    assert [s.step for s in steps] == [1, 2] and len(answer.telemetry["steps"]) == 2
    for key in ADDITIVE:
        assert answer.telemetry["total"][key] == pytest.approx(sum(s.telemetry[key] for s in steps))
    transcript = Transcript(tmp_path / "s.db")
    logged = [e for e in transcript.events(session_id) if isinstance(e, (ModelStep, Answer))]
    transcript.close()
    assert [type(e) for e in logged] == [ModelStep, ModelStep, Answer]
    assert logged == [*steps, answer]   # the transcript reads back the events as they were streamed


def test_telemetry_attention_mode_from_the_sparse_backend():
    """Without a result field, the mode comes from the engine's sparse backend threshold (InfLLM v2 `sparse_at`)."""
    from types import SimpleNamespace

    from agents.chat.engine_runner import EngineRunner
    from engine import GenerationResult

    backend = SimpleNamespace(sparse_at=lambda kv_len: kv_len >= 100)  # dense below 100 keys, as dense_len=100
    runner = EngineRunner(SimpleNamespace(runner=SimpleNamespace(attn=backend)))
    modes = [runner._attention_mode(GenerationResult("", [], "stop", p, d, 0.0, 0.0)) for p, d in
             ((10, 5), (95, 10), (120, 3))]
    assert modes == ["dense", "dense+sparse", "sparse"]
    assert EngineRunner(SimpleNamespace())._attention_mode(GenerationResult("", [], "stop", 1, 1, 0, 0)) is None


@pytest.mark.slow
def test_telemetry_cpm_chat_stats_prints_the_table(tmp_path, capsys, smollm2_path):
    """`cpm chat --once Q --stats --json`: the JSON answer on stdout carries the telemetry; the table on stderr."""
    import json
    import sys

    from tui.cli import main

    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"time": {"command": sys.executable, "args": [
        "-m", "mcp_server_time", "--local-timezone", "UTC"]}}}))
    argv = ["chat", "--mcp", str(config), "--once", "What time is it in UTC?", "--tool-choice", "required",
            "--approve", "never", "--max-steps", "2", "--max-tokens", "24", "--sessions", str(tmp_path / "s.db"),
            "--stats", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    answer = json.loads(out)
    steps, total = answer["telemetry"]["steps"], answer["telemetry"]["total"]
    assert len(steps) == 2 and total["generated_tokens"] == sum(s["generated_tokens"] for s in steps)
    table = [line for line in err.splitlines() if line.startswith(("q1", "total"))]
    assert [line.split()[0] for line in table] == ["q1", "q1", "total"]
    assert table[-1].split()[1:4] == [str(total["prompt_tokens"]), str(total["cached_tokens"]),
                                      str(total["generated_tokens"])]
