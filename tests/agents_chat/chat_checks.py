"""Assertions shared by the engine and HTTP tests: a tool-bound turn must give one schema-valid call."""
from __future__ import annotations

import jsonschema


def assert_schema_valid_call(message, tool: dict) -> dict:
    name = tool["function"]["name"]
    assert not message.invalid_tool_calls, message.invalid_tool_calls
    assert not message.response_metadata.get("invalid_tool_calls"), message.response_metadata
    assert [c["name"] for c in message.tool_calls] == [name], message
    args = message.tool_calls[0]["args"]
    jsonschema.validate(args, tool["function"]["parameters"])
    return args


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
