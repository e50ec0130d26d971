"""`cpm tui`: the Textual app (Survey studio and MCP assistant)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="open the terminal UI (Survey and Assistant modes)")
    p.add_argument("--model", help="model alias or path (default smollm2-135m)")
    p.add_argument("--backend", choices=["engine", "openai"], help="in-process engine or an OpenAI-compatible server")
    from agents.chat.factory import BaseUrlAction

    p.add_argument("--base-url", action=BaseUrlAction, help="server URL for --backend openai; repeat it (or a "
                   "comma list) for several servers")
    p.add_argument("--index", dest="index_dir", help="paper index directory for Survey mode")
    p.add_argument("--mcp", dest="mcp_config", help="MCP servers config file for Assistant mode")
    p.add_argument("--approve", help="tool approval: always | never | comma-separated allow list")
    p.add_argument("--tool-choice", choices=["auto", "required"], help="required: each turn starts with a tool call")
    p.add_argument("--think", choices=["none", "think", "thought"], help="the model reasons before each reply "
                   "(shown apart, never in the answer or tool arguments)")
    p.set_defaults(func=run)


def make_app(args: argparse.Namespace):
    """The app for these options: `--index DIR` says the user came to write a survey, so it opens there."""
    from tui.app import CpmApp
    from tui.settings import TuiSettings

    settings = TuiSettings.from_env(model=args.model, backend=args.backend, base_url=args.base_url,
                                    index_dir=args.index_dir, mcp_config=args.mcp_config, approve=args.approve,
                                    tool_choice=args.tool_choice, think=args.think)
    return CpmApp(settings, mode="survey" if args.index_dir else "assistant")


def run(args: argparse.Namespace) -> int:
    make_app(args).run()
    return 0
