"""The tests' own MCP server (MCPServer, the SDK's FastMCP): well-behaved tools plus misbehaving ones.

    python mcp_test_server.py                     # stdio
    python mcp_test_server.py --http --port 8765  # streamable HTTP on 127.0.0.1:8765/mcp

`--require-header NAME=VALUE` makes the HTTP server refuse requests without that header (config headers test).
`--polite` offers only the well-behaved tools (echo, add, weather): what the model-driven tests show a model.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

# A 1x1 transparent PNG: enough for the client to see an image block.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")

server = MCPServer("cpm-test", instructions="Test tools for cpm-suite.")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def weather(city: str) -> dict:
    """Current weather for a city (fixed test data), as JSON."""
    return {"city": city, "temperature_c": 21, "sky": "clear"}


@server.tool()
def image() -> Image:
    """Return a tiny PNG image."""
    return Image(data=PNG, format="png")


@server.tool()
def fail(reason: str = "on purpose") -> str:
    """Fail the way a tool reports its own errors."""
    raise ToolError(f"failed {reason}")


@server.tool()
def huge(chars: int = 2_000_000) -> str:
    """Return a very long text."""
    return "x" * chars


@server.tool()
async def hang(seconds: float = 3600) -> str:
    """Sleep far longer than any sane timeout."""
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool()
def crash() -> str:
    """Kill the server process in the middle of the call."""
    print("test server: crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
def whoami() -> str:
    """Return the value of $CPM_TEST_WHO in the server's environment and its working directory."""
    return f"{os.environ.get('CPM_TEST_WHO', '<unset>')} in {os.getcwd()}"


@server.resource("test://readme", name="readme", description="A short text resource", mime_type="text/plain")
def readme() -> str:
    return "cpm test server"


@server.prompt()
def summarize(topic: str) -> str:
    """Ask for a summary of a topic."""
    return f"Summarize {topic} in one sentence."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--require-header", default=None)
    parser.add_argument("--polite", action="store_true")
    args = parser.parse_args()
    if args.polite:
        for name in ("image", "fail", "huge", "hang", "crash", "whoami"):
            server.remove_tool(name)
    if not args.http:
        server.run()
        return
    import uvicorn
    from starlette.responses import PlainTextResponse

    app = server.streamable_http_app()
    if args.require_header:
        key, _, value = args.require_header.partition("=")
        inner = app

        async def app(scope, receive, send):  # noqa: F811 - wraps the MCP app with a header check
            if scope["type"] == "http" and dict(scope["headers"]).get(key.lower().encode()) != value.encode():
                await PlainTextResponse("missing header", status_code=401)(scope, receive, send)
                return
            await inner(scope, receive, send)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
