"""The TUI's settings: one typed object, read once at start-up from the environment and CLI options."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class TuiSettings:
    model: str = "smollm2-135m"
    backend: str = "engine"  # "engine" (in-process) | "openai" (a remote OpenAI-compatible server)
    base_url: str | None = None
    index_dir: str | None = None
    mcp_config: str | None = None
    approve: str = "always"  # "always" ask | "never" ask | comma-separated allow list of server.tool
    tool_choice: str = "auto"  # "required": the first model call of a turn must call a tool
    think: str = "none"  # "think" | "thought": the model reasons (free text, shown apart) before each reply
    max_tokens: int = 256
    survey_parallel: int = 4  # survey sections written at once (the engine batches them; 1: one at a time)

    @classmethod
    def from_env(cls, **overrides) -> "TuiSettings":
        """Defaults, then CPM_* environment variables, then explicit (non-None) overrides."""
        env = {
            "backend": os.environ.get("CPM_BACKEND"),
            "base_url": os.environ.get("CPM_BASE_URL"),
            "model": os.environ.get("CPM_MODEL"),
            "index_dir": os.environ.get("CPM_INDEX"),
            "mcp_config": os.environ.get("CPM_MCP_CONFIG"),
        }
        values = {k: v for k, v in {**env, **overrides}.items() if v is not None}
        return replace(cls(), **values)
