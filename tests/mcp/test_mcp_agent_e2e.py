"""End to end on the default model (smollm2-135m through agents.chat) with real MCP servers: `cpm chat --once
--json`, the REPL with its slash commands, and (slow) the tool-pick rate over a set of questions.

With `--tool-choice required` the first call of a turn is grammar-constrained, so it must name a listed tool
with schema-valid arguments: that is asserted. Whether the 135M model picks the right tool is measured and
printed, not asserted.
"""
import json
import subprocess
import sys

import jsonschema
import pytest

from mcp_test_entries import git_entry, own_server_entry, time_entry

from mcp_client import MCPManager


def cpm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "mcp.json"
    # The model sees only well-behaved tools here; the misbehaving ones have their own tests.
    polite = own_server_entry()
    polite["args"].append("--polite")
    path.write_text(json.dumps({"mcpServers": {"time": time_entry(), "t": polite}}))
    return path


async def schemas(config: dict) -> dict:
    async with MCPManager(config) as mcp:
        return {t.name: t.input_schema for t in await mcp.list_tools()}


def assert_schema_valid(call: dict, tool_schemas: dict) -> None:
    assert call["name"] in tool_schemas, f"model called an unlisted tool: {call}"
    jsonschema.validate(call["args"], tool_schemas[call["name"]])


async def test_chat_once_json_on_default_model(smollm2_path, config_file, tmp_path):
    out = cpm("chat", "--mcp", str(config_file), "--once", "What time is it in Tokyo right now?", "--json",
              "--tool-choice", "required", "--approve", "never", "--max-steps", "2", "--max-tokens", "64",
              "--sessions", str(tmp_path / "s.db"))
    assert out.returncode == 0, out.stderr[-2000:]
    trace = json.loads(out.stdout)
    assert trace["question"].startswith("What time") and trace["session"] and trace["steps"] == 2
    assert trace["answer"].strip()
    assert trace["tool_calls"], trace
    tool_schemas = await schemas(json.loads(config_file.read_text()))
    for c in trace["tool_calls"]:
        assert_schema_valid(c, tool_schemas)
        assert "invalid arguments" not in c["result"]          # the server got a call it accepts
    print(f"\ndefault model picked {[c['name'] for c in trace['tool_calls']]} "
          f"(right: time.get_current_time); answer: {trace['answer']!r}")


def test_repl_slash_commands_need_no_model(config_file, tmp_path):
    # The model loads at the first question: slash commands never wait for it.
    out = cpm("chat", "--mcp", str(config_file), "--approve", "t.*", "--sessions", str(tmp_path / "s.db"),
              stdin="/tools\n/servers\n/session\n/reset\n/nonsense\n")
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "time.get_current_time" in text and "t.add" in text            # /tools
    assert "time: ready, 2 tools" in text and "t: ready, 3 tools" in text  # /servers
    assert "new session" in text and "/tools  /servers" in text           # /reset, then help for /nonsense
    typo = cpm("chat", "--mcp", str(config_file), "--approve", "tme.*", "--sessions", str(tmp_path / "s.db"),
               stdin="")
    assert typo.returncode == 2 and "tme.*" in typo.stderr


@pytest.mark.slow
def test_repl_question_on_default_model(smollm2_path, config_file, tmp_path):
    out = cpm("chat", "--mcp", str(config_file), "--tool-choice", "required", "--approve", "never",
              "--max-steps", "2", "--max-tokens", "48", "--sessions", str(tmp_path / "s.db"),
              stdin="What is 17 plus 25?\n/quit\n")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "→ " in out.stdout and "← " in out.stdout                     # a tool call and its result shown
    listed = cpm("chat", "--list-sessions", "--sessions", str(tmp_path / "s.db"))
    assert "What is 17 plus 25?" in listed.stdout


QUESTIONS = [
    ("What time is it in Tokyo right now?", {"time.get_current_time"}),
    ("Convert 09:30 from Europe/London time to America/New_York time.", {"time.convert_time"}),
    ("What is 17 plus 25?", {"t.add"}),
    ("What's the weather in Oslo?", {"t.weather"}),
    ("Repeat back exactly: hello world", {"t.echo"}),
    ("Show me the recent commits of the git repository at {repo}", {"git.git_log"}),
    ("Which files changed in the git repository at {repo}?", {"git.git_status", "git.git_diff_unstaged"}),
]


@pytest.mark.slow
async def test_tool_pick_rate_on_default_model(smollm2_path, git_repo, tmp_path):
    from agents.chat import make_chat_model
    from agents.events import Answer
    from agents.tools.configuration import Configuration
    from agents.tools.session import ToolSession

    model = make_chat_model(backend="engine", model="smollm2-135m")
    polite = own_server_entry()
    polite["args"].append("--polite")
    config = {"mcpServers": {"time": time_entry(), "t": polite, "git": git_entry(git_repo)}}
    settings = Configuration(approve="never", tool_choice="required", max_steps=2, max_tokens=96)
    rows = []
    async with MCPManager(config) as mcp:
        tool_schemas = {t.name: t.input_schema for t in await mcp.list_tools()}
        async with ToolSession(model=model, mcp=mcp, db_path=tmp_path / "s.db", settings=settings) as session:
            for question, right in QUESTIONS:
                session.reset()                      # one fresh session per question: no carry-over
                question = question.format(repo=git_repo)
                answer = [e async for e in session.ask(question)][-1]
                assert isinstance(answer, Answer)
                first = answer.tool_calls[0] if answer.tool_calls else None
                if first is None:       # the forced call was cut off by max_tokens: a miss, not a bad call
                    rows.append({"question": question, "picked": None, "right": False, "answer": answer.text})
                    continue
                assert_schema_valid(first, tool_schemas)
                rows.append({"question": question, "picked": first["name"], "right": first["name"] in right,
                             "args": first["args"], "tool_error": first.get("is_error"), "answer": answer.text})
    rate = sum(r["right"] for r in rows) / len(rows)
    print(f"\ntool-pick rate of smollm2-135m (tool_choice=required, {len(tool_schemas)} tools): "
          f"{rate:.0%} ({sum(r['right'] for r in rows)}/{len(rows)}); every call made was schema-valid")
    for r in rows:
        print(json.dumps(r, ensure_ascii=False))
