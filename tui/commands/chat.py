"""`cpm chat`: a terminal chat with MCP tools: streaming answers, tool calls shown with arguments and
results, approval prompts, and /tools, /servers, /reset. `--once "question"` answers one question for scripts
(`--json` prints the trace). Sessions live in SQLite; `--session ID` resumes one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tui.commands.mcp import add_mcp_options

DEFAULT_DB = Path("out/chat-sessions.sqlite")
HELP = "/tools  /servers  /reset (new session)  /session  /help  /quit"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a model that calls MCP tools (REPL, or --once for scripts)",
                       description="Model -> MCP tool calls (parallel, approved per --approve) -> answer. "
                                   "Commands in the REPL: " + HELP)
    add_mcp_options(p)
    from agents.chat.factory import add_backend_arguments

    add_backend_arguments(p)
    p.add_argument("--approve", default="always", metavar="POLICY",
                   help="when a tool call asks first: 'always' (default), 'never' (run all without asking), or a "
                        "comma list of server.tool names/patterns that run without asking, e.g. 'time.*'. "
                        "Without a terminal to ask on, a call that needs approval is denied")
    p.add_argument("--once", metavar="QUESTION", help="answer one question and exit")
    p.add_argument("--json", action="store_true", help="with --once: print the answer and trace as JSON")
    p.add_argument("--session", metavar="ID", help="resume this session (ids are printed at start)")
    p.add_argument("--sessions", type=Path, default=DEFAULT_DB, help=f"session database (default {DEFAULT_DB})")
    p.add_argument("--list-sessions", action="store_true", help="list recent sessions and exit")
    p.add_argument("--tool-choice", choices=["auto", "required"], default="auto",
                   help="required: each question's first model call must call a tool (schema-valid on the engine)")
    p.add_argument("--tool-rounds", type=int, default=1, metavar="N",
                   help="rounds of tool calls per question before the model answers from the results (default 1, "
                        "right for the 135M default; raise it for a bigger model that chains calls)")
    p.add_argument("--max-steps", type=int, default=6, help="model calls per question (default 6)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per model reply (default 512)")
    p.add_argument("--timeout", type=float, help="seconds per tool call (default: each server's, else 60)")
    p.add_argument("--think", choices=["think", "thought"], help="the model reasons before each answer or call, "
                   "in <think> or <|thought_start|> blocks kept apart from the answer (engine backend)")
    p.add_argument("--stats", action="store_true", help="print the engine telemetry table (one row per model "
                                                       "call) at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from tui.errors import UsageError

    if args.list_sessions:
        return list_sessions(args.sessions)
    if args.json and not args.once:
        raise UsageError("--json goes with --once \"question\"")
    if args.session and not args.sessions.exists():
        raise UsageError(f"--session {args.session}: no session database at {args.sessions} (see --sessions)")
    from agents.tools.approval import ApprovalPolicy
    from agents.tools.configuration import Configuration
    from tui.commands.mcp import open_config, quiet_sdk_logs

    quiet_sdk_logs()
    settings = Configuration(max_steps=args.max_steps, approve=args.approve, max_tokens=args.max_tokens,
                             tool_choice=args.tool_choice, reasoning=args.think, tool_rounds=args.tool_rounds)
    ApprovalPolicy.parse(args.approve)          # a bad policy is refused before the model loads
    servers = open_config(args.mcp, required=False)
    return asyncio.run(chat(args, servers, settings))


def list_sessions(db: Path) -> int:
    from agents.tools.transcript import Transcript

    if not db.exists():
        print(f"no sessions yet ({db} does not exist)")
        return 0
    transcript = Transcript(db)
    for s in transcript.sessions():
        print(f"{s['id']}  {s['model'] or '-':<14}  {s['title'] or '(empty)'}")
    transcript.close()
    return 0


async def chat(args: argparse.Namespace, servers: dict, settings) -> int:
    from mcp_client import MCPManager

    from agents.tools.session import ToolSession
    from tui.chat_view import ChatView

    interactive = sys.stdin.isatty()
    view = ChatView(quiet=bool(args.json))
    async with MCPManager(servers, call_timeout=args.timeout) as mcp:
        check_allow_list(args.approve, mcp, await mcp.list_tools())
        async with ToolSession(model=None, mcp=mcp, db_path=args.sessions, settings=settings,
                               approve=view.ask_approval if interactive else None, session_id=args.session,
                               resume=bool(args.session), model_name=args.model or "") as session:
            view.servers(mcp.servers(), warn_only=True)
            steps: list[dict] = []  # telemetry of every model call, for --stats
            try:
                if args.once:
                    return await _once(session, view, args, steps)
                view.banner(session.session_id, settings, len(await mcp.list_tools()))
                if args.session:
                    view.history(await session.history())
                return await _repl(session, mcp, view, args, steps)
            finally:
                if args.stats and steps:
                    print_stats(steps, sys.stderr if args.json else sys.stdout)


def print_stats(steps: list[dict], out) -> None:
    from agents.chat.telemetry import stats_table

    print(stats_table(steps, label_keys=("turn", "step")), file=out)


def check_allow_list(policy: str, mcp, tools) -> None:
    """An allow-list entry that matches no tool is a typo; entries for a server that failed to start are
    not judged (its failure is shown anyway)."""
    from agents.errors import AgentError
    from agents.tools.approval import ApprovalPolicy

    down = {s.name for s in mcp.servers() if s.state != "ready"}
    unknown = [p for p in ApprovalPolicy.parse(policy).unmatched([t.name for t in tools])
               if p.partition(".")[0] not in down]
    if unknown:
        raise AgentError(f"--approve names {', '.join(unknown)}, which match no tool; tools: "
                         f"{', '.join(t.name for t in tools) or 'none'}")


async def _ensure_model(session, view, args) -> None:
    """Load the model at the first question, so slash commands and server checks never wait for it. A thread
    keeps the MCP sessions served while it loads."""
    import asyncio

    from agents.chat.factory import chat_model_from_args, resolve_backend

    if session.model is None:
        local = resolve_backend(args.backend, args.model, args.base_url)[0] == "engine"
        view.note("loading the model…" if local else "connecting to the model server…")
        session.model = await asyncio.to_thread(chat_model_from_args, args)


async def _once(session, view, args, steps: list[dict]) -> int:
    from agents.events import Answer

    await _ensure_model(session, view, args)
    answer = None
    async for event in session.ask(args.once):
        view.event(event)
        if isinstance(event, Answer):
            answer = event
            steps += [{"turn": "q1", **s} for s in event.telemetry["steps"]]
    if args.json:
        trace = {k: v for k, v in answer.to_dict().items() if k not in ("event", "text")}
        print(json.dumps({"question": args.once, "answer": answer.text, **trace}, indent=2, default=str))
    return 0


async def _repl(session, mcp, view, args, steps: list[dict]) -> int:
    import asyncio

    from agents.events import Answer

    turn = 0
    while True:
        try:
            line = (await asyncio.to_thread(input, "you> ")).strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            command = line.split()[0].lower()
            if command in ("/quit", "/exit"):
                return 0
            if command == "/tools":
                view.tools(await mcp.list_tools())
            elif command == "/servers":
                view.servers(mcp.servers())
            elif command == "/reset":
                view.note(f"new session {session.reset()} (the old one stays resumable)")
            elif command == "/session":
                view.note(f"session {session.session_id}")
            else:
                view.note(HELP)
            continue
        await _ensure_model(session, view, args)
        turn += 1
        async for event in session.ask(line):
            view.event(event)
            if isinstance(event, Answer):
                steps += [{"turn": f"q{turn}", **s} for s in event.telemetry["steps"]]
