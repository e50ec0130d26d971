"""`cpm mcp servers|tools|resources|prompts|call`: inspect MCP servers and call their tools by hand.

    cpm mcp servers --mcp mcp.json
    cpm mcp tools --mcp mcp.json [SERVER]
    cpm mcp call --mcp mcp.json time.get_current_time '{"timezone": "UTC"}'

The config is `--mcp FILE`, else $CPM_MCP_CONFIG, else ~/.config/cpm/mcp.json. Exit codes: 0 ok, 1 the tool
(or a server) reported an error, 2 a mistake on the command line (unknown server or tool, bad JSON).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mcp", help="list MCP servers, tools, resources and prompts; call a tool by hand")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    common = argparse.ArgumentParser(add_help=False)
    add_mcp_options(common)
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    verbs.add_parser("servers", parents=[common], help="start every server and show its state")
    for verb in ("tools", "resources", "prompts"):
        v = verbs.add_parser(verb, parents=[common], help=f"list the {verb} of all servers (or one)")
        v.add_argument("server", nargs="?", help="only this server")
    c = verbs.add_parser("call", parents=[common], help="call SERVER.TOOL with JSON arguments")
    c.add_argument("tool", metavar="SERVER.TOOL")
    c.add_argument("arguments", metavar="JSON-ARGS", nargs="?", default="{}",
                   help="a JSON object, e.g. '{\"timezone\": \"UTC\"}' (default {})")
    c.add_argument("--timeout", type=float, default=None, help="seconds to wait for the tool (default: the "
                   "server's 'timeout', else 60)")
    p.set_defaults(func=run)


def add_mcp_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mcp", metavar="FILE", help="MCP config JSON ({\"mcpServers\": {...}}); default "
                        "$CPM_MCP_CONFIG or ~/.config/cpm/mcp.json")


def open_config(path: str | None, required: bool = True) -> dict:
    """The parsed server configs from --mcp / $CPM_MCP_CONFIG / ~/.config/cpm/mcp.json ({} if none and
    not required)."""
    from mcp_client.config import find_config, load_config
    from mcp_client.errors import MCPError

    found = find_config(path)
    if found is None:
        if required:
            raise MCPError("no MCP config: pass --mcp FILE (a JSON file with \"mcpServers\") "
                           "or set CPM_MCP_CONFIG")
        return {}
    return load_config(found)


def quiet_sdk_logs() -> None:
    """The SDK logs teardown noise of dead servers to stderr; we report server states ourselves."""
    logging.getLogger("mcp").setLevel(logging.CRITICAL)


def run(args: argparse.Namespace) -> int:
    import anyio

    quiet_sdk_logs()
    servers = open_config(args.mcp)
    if args.verb == "call":
        return anyio.run(_call, servers, args)
    if getattr(args, "server", None):
        servers = {args.server: _one_server(servers, args.server)}
    return anyio.run(_list, servers, args)


def _one_server(servers: dict, name: str):
    from mcp_client.errors import MCPError

    if name not in servers:
        raise MCPError(f"unknown server '{name}'; configured servers: {', '.join(servers) or 'none'}")
    return servers[name]


async def _call(servers: dict, args: argparse.Namespace) -> int:
    from mcp_client.errors import MCPError
    from mcp_client.manager import MCPManager, check_arguments

    try:
        arguments = json.loads(args.arguments)
    except json.JSONDecodeError as exc:
        raise MCPError(f"JSON-ARGS is not valid JSON ({exc.msg} at column {exc.colno}); "
                       "quote it for the shell, e.g. '{\"timezone\": \"UTC\"}'") from None
    server = args.tool.partition(".")[0] if "." in args.tool else None
    if server is not None:
        servers = {server: _one_server(servers, server)}   # start only the server we need
    async with MCPManager(servers) as mcp:
        spec = mcp.resolve(args.tool)       # MCPError (exit 2) for an unknown tool or a server that failed
        check_arguments(spec, arguments)    # MCPError (exit 2) naming the bad field
        result = await mcp.call(spec.name, arguments, timeout=args.timeout)
    if args.json:
        print(json.dumps(result.as_dict() | {"structured": result.structured}, indent=2, default=str))
    else:
        print(result.text)
        if result.is_error:
            print(f"cpm mcp call: {spec.name} reported an error ({result.duration_s:.2f}s)", file=sys.stderr)
    return 1 if result.is_error else 0


async def _list(servers: dict, args: argparse.Namespace) -> int:
    from mcp_client.manager import MCPManager

    async with MCPManager(servers) as mcp:
        status = mcp.servers()
        if args.verb == "servers":
            rows = [s.as_dict() for s in status]
        elif args.verb == "tools":
            rows = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                    for t in await mcp.list_tools()]
        elif args.verb == "resources":
            rows = [r.__dict__ for r in await mcp.list_resources()]
        else:
            rows = [p.__dict__ for p in await mcp.list_prompts()]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:  # an empty table reads as a display fault
        print("no servers configured" if args.verb == "servers" else f"no {args.verb}: the ready servers offer none")
    else:
        _print_table(args.verb, rows)
    failed = [s for s in status if s.state != "ready"]
    if args.verb != "servers":
        for s in failed:   # tables of tools would silently miss a server otherwise
            print(f"cpm mcp: server '{s.name}' is {s.state}: {s.error}", file=sys.stderr)
    return 1 if failed else 0


def _print_table(verb: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    if verb == "servers":
        table = Table("server", "transport", "state", "tools", "command / url", "error")
        for r in rows:
            state = r["state"] if r["state"] == "ready" else f"[red]{r['state']}[/]"
            table.add_row(r["name"], r["transport"], state, str(r["tools"]), r["where"], r["error"] or "")
    elif verb == "tools":
        table = Table("tool", "arguments", "description")
        for r in rows:
            props = (r["input_schema"] or {}).get("properties", {})
            required = set((r["input_schema"] or {}).get("required", []))
            args = ", ".join(f"{k}{'' if k in required else '?'}" for k in props)
            table.add_row(r["name"], args, (r["description"] or "").strip().split("\n")[0])
    elif verb == "resources":
        table = Table("server", "uri", "name", "description")
        for r in rows:
            table.add_row(r["server"], r["uri"], r["name"], r["description"])
    else:
        table = Table("server", "prompt", "arguments", "description")
        for r in rows:
            table.add_row(r["server"], r["name"], ", ".join(r["arguments"]), r["description"])
    Console().print(table)
