"""Errors raised for a user's mistake in mcp_client/; the CLI prints them as one line and exits 2."""


class MCPError(Exception):
    """A problem with the user's MCP configuration or a server, with a message that says how to fix it."""
