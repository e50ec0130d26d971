"""Mechanics of the tool graph with real MCP servers and a scripted model (the real model is exercised in
test_mcp_agent_e2e.py): parallel calls, approval (a denied tool never runs), step limit, bad calls fed back,
sessions resumed from SQLite."""
import sqlite3
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from mcp_scripted_model import ScriptedChatModel, call, calls
from mcp_test_entries import own_server_entry, sqlite_entry

from agents.errors import AgentError
from agents.events import Answer, InvalidCall, ToolCall, ToolResult
from agents.tools.approval import ApprovalPolicy
from agents.tools.configuration import Configuration
from agents.tools.history import past_turns_as_answers, trim_history
from agents.tools.session import ToolSession
from mcp_client import MCPManager


async def run_turn(session, question):
    events = [e async for e in session.ask(question)]
    assert isinstance(events[-1], Answer)
    return events, events[-1]


async def test_parallel_calls_and_unknown_tool(tmp_path):
    model = ScriptedChatModel(script=[
        calls(call("t.hang", {"seconds": 3}, "a"), call("t.hang", {"seconds": 3}, "b"), call("t.frobnicate", id="c")),
        AIMessage("Both slept.")])
    async with MCPManager({"mcpServers": {"t": own_server_entry()}}) as mcp:
        async with ToolSession(model=model, mcp=mcp, db_path=tmp_path / "s.db",
                               settings=Configuration(approve="never")) as session:
            started = time.monotonic()
            events, answer = await run_turn(session, "sleep twice")
            wall = time.monotonic() - started
    assert answer.text == "Both slept." and answer.stopped == "answer" and answer.steps == 2
    results = {e.id: e for e in events if isinstance(e, ToolResult)}
    assert results["a"].text == results["b"].text == "woke up"
    # The two 3 s sleeps overlapped: one after the other they take 6 s; 1.5 s is room for a loaded machine.
    assert wall < results["a"].duration_s + results["b"].duration_s - 1.5
    assert results["c"].is_error and "no tool 'frobnicate'" in results["c"].text
    # The model's second request carries all three results, the failed one included.
    sent = [m for m in model.requests[1]["messages"] if isinstance(m, ToolMessage)]
    assert [m.tool_call_id for m in sent] == ["a", "b", "c"] and sent[2].status == "error"
    assert model.requests[0]["tools"][0].startswith("t.")


def rows(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT name FROM items ORDER BY name").fetchall()


async def test_denied_tool_never_runs(tmp_path, sqlite_server):
    db = tmp_path / "shop.db"
    sqlite3.connect(db).execute("CREATE TABLE items (name TEXT)").connection.commit()
    insert = call("db.write_query", {"query": "INSERT INTO items VALUES ('pen')"}, "w")
    asked = []

    def deny(name, args):
        asked.append(name)
        return False

    async with MCPManager({"mcpServers": {"db": sqlite_entry(sqlite_server, db)}}) as mcp:
        model = ScriptedChatModel(script=[calls(insert), AIMessage("I could not add it.")])
        async with ToolSession(model=model, mcp=mcp, db_path=tmp_path / "s.db", approve=deny,
                               settings=Configuration(approve="always")) as session:
            events, answer = await run_turn(session, "add a pen")
        assert asked == ["db.write_query"] and rows(db) == []            # denied: the server never saw it
        result = next(e for e in events if isinstance(e, ToolResult))
        assert result.denied and "did not approve" in result.text
        assert answer.tool_calls[0]["approval"] == "denied"

        # No one to ask (a script without a terminal): also denied.
        model = ScriptedChatModel(script=[calls(insert), AIMessage("no")])
        async with ToolSession(model=model, mcp=mcp, db_path=tmp_path / "s.db", approve=None) as session:
            await run_turn(session, "add a pen")
        assert rows(db) == []

        # Allow list: reads run without asking; the write asks, is approved, and runs.
        asked.clear()
        model = ScriptedChatModel(script=[
            calls(call("db.read_query", {"query": "SELECT count(*) AS n FROM items"}, "r"), insert),
            AIMessage("Added.")])
        async with ToolSession(model=model, mcp=mcp, db_path=tmp_path / "s.db",
                               approve=lambda name, args: asked.append(name) or True,
                               settings=Configuration(approve="db.read_*")) as session:
            _, answer = await run_turn(session, "add a pen")
        assert asked == ["db.write_query"] and rows(db) == [("pen",)]
        assert [c["approval"] for c in answer.tool_calls] == ["not asked", "approved"]


async def test_one_tool_round_then_an_answer_from_the_results(tmp_path):
    """The default (tool_rounds=1): after the first results the model answers, without tools to call again."""
    model = ScriptedChatModel(fallback=calls(call("t.echo", {"text": "again"})))
    async with MCPManager({"mcpServers": {"t": own_server_entry()}}) as mcp:
        async with ToolSession(model=model, mcp=mcp, db_path=tmp_path / "s.db",
                               settings=Configuration(approve="never")) as session:
            events, answer = await run_turn(session, "echo once")
    assert answer.stopped == "answer" and answer.steps == 2
    assert len([e for e in events if isinstance(e, ToolCall)]) == 1
    assert model.requests[-1]["tools"] == []
    assert "without calling more tools" in model.requests[-1]["messages"][-1].content


async def test_step_limit_ends_with_an_answer_without_tools(tmp_path):
    model = ScriptedChatModel(fallback=calls(call("t.echo", {"text": "again"})))
    async with MCPManager({"mcpServers": {"t": own_server_entry()}}) as mcp:
        async with ToolSession(model=model, mcp=mcp, db_path=tmp_path / "s.db",
                               settings=Configuration(approve="never", max_steps=3, tool_rounds=5)) as session:
            events, answer = await run_turn(session, "loop forever")
    assert answer.stopped == "step_limit" and answer.steps == 3
    assert len([e for e in events if isinstance(e, ToolCall)]) == 2
    assert model.requests[-1]["tools"] == []          # the last call had no tools to call
    assert "without calling more tools" in model.requests[-1]["messages"][-1].content


async def test_unparsable_calls_go_back_to_the_model(tmp_path):
    bad = AIMessage(content="", invalid_tool_calls=[{"name": "t.add", "args": "{a: 1", "id": "x",
                                                     "error": "arguments are not JSON", "type": "invalid_tool_call"}])
    model = ScriptedChatModel(script=[bad, AIMessage("Sorry.")])
    async with MCPManager({"mcpServers": {"t": own_server_entry()}}) as mcp:
        async with ToolSession(model=model, mcp=mcp, db_path=tmp_path / "s.db") as session:
            events, answer = await run_turn(session, "add")
    assert any(isinstance(e, InvalidCall) and "arguments are not JSON" in e.error for e in events)
    feedback = model.requests[1]["messages"][-1]
    assert isinstance(feedback, HumanMessage) and "arguments are not JSON" in feedback.content
    assert answer.text == "Sorry."


async def test_session_resumes_from_sqlite(tmp_path):
    db = tmp_path / "s.db"
    async with MCPManager({"mcpServers": {"t": own_server_entry()}}) as mcp:
        model = ScriptedChatModel(script=[calls(call("t.add", {"a": 20, "b": 22})), AIMessage("42")])
        async with ToolSession(model=model, mcp=mcp, db_path=db, settings=Configuration(approve="never")) as s:
            await run_turn(s, "what is 20+22?")
            session_id = s.session_id
        model = ScriptedChatModel(script=[AIMessage("It was 42.")])
        async with ToolSession(model=model, mcp=mcp, db_path=db, session_id=session_id, resume=True) as s:
            assert len(await s.history()) == 4           # question, call, result, answer
            _, answer = await run_turn(s, "what was the result?")
            assert [type(e) for e in s.transcript.events(session_id)].count(Answer) == 2
            new_id = s.reset()
            assert new_id != session_id and await s.history() == []
        sent = model.requests[0]["messages"]
        # The earlier turn is shown as its question and answer; its call and result stay in that turn.
        assert [type(m).__name__ for m in sent[1:]] == ["HumanMessage", "AIMessage", "HumanMessage"]
        assert sent[2].content == "42" and not any(isinstance(m, ToolMessage) for m in sent)
        with pytest.raises(AgentError, match="no chat session 'nope'"):
            async with ToolSession(model=model, mcp=mcp, db_path=db, session_id="nope", resume=True):
                pass


def test_approval_policy_and_history_trim():
    assert ApprovalPolicy.parse("always").needs_approval("t.echo")
    assert not ApprovalPolicy.parse("never").needs_approval("t.echo")
    allow = ApprovalPolicy.parse("time.*, git.git_status")
    assert not allow.needs_approval("time.convert_time") and allow.needs_approval("git.git_commit")
    assert allow.unmatched(["time.get_current_time"]) == ["git.git_status"]
    with pytest.raises(AgentError, match="comma list"):
        ApprovalPolicy.parse("yes")
    turns = [HumanMessage("q1" * 50), AIMessage("a1" * 50), HumanMessage("q2"), AIMessage("a2"), HumanMessage("q3")]
    assert trim_history(turns, 20) == turns[2:]
    assert trim_history(turns, 10_000) == turns
    assert trim_history(turns, 1) == turns[4:]


def test_past_turns_are_question_and_answer_only():
    """A denial in turn 1 (call, denied result, answer) does not reach turn 2's prompt, only turn 1's answer."""
    denied = ToolMessage("The user did not approve running t.echo", tool_call_id="x")
    turns = [HumanMessage("q1"), calls(call("t.echo", {"text": "hi"}, "x")), denied, AIMessage("I could not."),
             HumanMessage("q2"), calls(call("t.add", {"a": 1, "b": 2}, "y")), ToolMessage("3", tool_call_id="y")]
    shown = past_turns_as_answers(turns)
    assert [m.content for m in shown[:2]] == ["q1", "I could not."] and shown[2:] == turns[4:]
    note = HumanMessage("Your tool call could not be used", additional_kwargs={"cpm_note": True})
    assert past_turns_as_answers([HumanMessage("q"), AIMessage(""), note]) == [HumanMessage("q"), AIMessage(""), note]
