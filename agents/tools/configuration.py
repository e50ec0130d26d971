"""Knobs of the tool agent, read by each node from the run's `configurable` dict."""
from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from pydantic import BaseModel, Field, model_validator

from agents.errors import AgentError


class Configuration(BaseModel):
    """Bounds of one user turn and of the history the model sees."""

    max_steps: int = Field(6, description="model calls per user turn; the last one answers without tools")
    approve: str = Field("always", description="'always', 'never' or an allow list (see agents.tools.approval)")
    tool_choice: str = Field("auto", description="'auto', or 'required': the first model call of a turn must call "
                             "a tool (constrained decoding makes it a schema-valid call)")
    tool_rounds: int = Field(1, description="rounds of tool calls per user turn before the model must answer from "
                             "the results; 1 suits the 135M default (given tools again it calls again instead of "
                             "answering), raise it for a bigger model that chains calls")
    max_tokens: int = Field(512, description="token budget of one model reply")
    max_history_chars: int = Field(12_000, description="older turns are dropped from the prompt past this size")
    system_prompt: str | None = Field(None, description="replaces the default system prompt")
    reasoning: str | None = Field(None, description="'think' or 'thought': the model reasons before each answer or "
                                  "call (in-process engine; the grammar applies from the call on)")

    @model_validator(mode="after")
    def _check(self) -> "Configuration":
        if self.max_steps < 1:
            raise AgentError(f"max-steps must be at least 1 (got {self.max_steps})")
        if self.tool_rounds < 1:
            raise AgentError(f"tool-rounds must be at least 1 (got {self.tool_rounds})")
        if self.tool_choice not in ("auto", "required"):
            raise AgentError(f"tool-choice must be 'auto' or 'required' (got {self.tool_choice!r})")
        if self.reasoning not in (None, "think", "thought"):
            raise AgentError(f"reasoning must be 'think' or 'thought' (got {self.reasoning!r})")
        if self.max_tokens < 16:
            raise AgentError(f"max-tokens must be at least 16 (got {self.max_tokens})")
        return self

    @classmethod
    def from_runnable_config(cls, config: RunnableConfig | None) -> "Configuration":
        configurable: dict[str, Any] = (config or {}).get("configurable", {})
        return cls(**{k: v for k, v in configurable.items() if k in cls.model_fields})
