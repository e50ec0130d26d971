"""One builder per transport: enter the SDK's stdio or streamable-HTTP client on the caller's exit stack
and hand back the (read, write) stream pair that a ClientSession runs on."""
from __future__ import annotations

from contextlib import AsyncExitStack
from typing import IO, Any

from mcp_client.config import HttpServer, ServerConfig, StdioServer
from mcp_client.redact import guard_logs

# A tool may legitimately return megabytes (a file, a query dump); we want it back and truncated with a note,
# not lost to the SDK's default 1 MiB SSE event cap.
MAX_HTTP_EVENT_BYTES = 64 * 1024 * 1024


async def open_stdio(stack: AsyncExitStack, config: StdioServer, errlog: IO[str]) -> tuple[Any, Any]:
    """Start the server process; its stderr goes to `errlog` so a crash can be explained from its last lines."""
    from mcp import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=config.command, args=config.args, env=config.env or None,
                                   cwd=config.cwd)
    return await stack.enter_async_context(stdio_client(params, errlog=errlog))


async def open_http(stack: AsyncExitStack, config: HttpServer) -> tuple[Any, Any]:
    """Connect to a running server; the headers (often an Authorization token) go on every request."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    guard_logs(config.secrets)  # the HTTP client and the SDK log request URLs
    # The SDK's own defaults: 30 s to connect or write, 5 min for a response stream to stay quiet.
    client = httpx2.AsyncClient(headers=config.headers, timeout=httpx2.Timeout(30.0, read=300.0))
    await stack.enter_async_context(client)
    return await stack.enter_async_context(
        streamable_http_client(config.url, http_client=client, max_sse_event_size=MAX_HTTP_EVENT_BYTES))


async def open_streams(stack: AsyncExitStack, config: ServerConfig, errlog: IO[str]) -> tuple[Any, Any]:
    if isinstance(config, StdioServer):
        return await open_stdio(stack, config, errlog)
    return await open_http(stack, config)
