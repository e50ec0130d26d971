"""Errors raised for a user's mistake in agents/; the CLI prints them as one line and exits 2."""


class AgentError(Exception):
    """A problem with an agent run: backend, tool call or evaluation data, with a message that says how to fix it."""
