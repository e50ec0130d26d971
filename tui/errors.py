"""Which exceptions count as the user's mistake: printed as one line by the CLI, exit code 2."""
from __future__ import annotations

from agents.errors import AgentError
from engine.errors import EngineError
from mcp_client.errors import MCPError
from retrieval.errors import RetrievalError
from survey.errors import SurveyError


class UsageError(Exception):
    """A wrong combination of command-line options."""


def user_errors() -> tuple[type[BaseException], ...]:
    # FileNotFoundError/IsADirectoryError/PermissionError: a path the user typed; their messages name it.
    return (UsageError, EngineError, RetrievalError, MCPError, SurveyError, AgentError,
            FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
