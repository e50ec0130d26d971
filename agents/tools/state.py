"""Graph state (checkpointed: messages only, which LangGraph's serializer stores as they are) and the
run-time context (model, MCP manager, approval callback: live objects, never checkpointed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from agents.tools.approval import ApproveFn


class ToolAgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    steps: int          # model calls in the current user turn; the session resets it to 0 per turn
    stopped: str        # why the last turn ended: "answer" | "step_limit"


@dataclass
class ToolAgentContext:
    """What the nodes use at run time; a resumed session passes fresh ones."""

    model: Any                          # langchain-core BaseChatModel
    mcp: Any                            # mcp_client.MCPManager (list_tools / call)
    tools: list[Any] = field(default_factory=list)   # mcp_client ToolSpec, listed at the start of the turn
    approve: ApproveFn | None = None    # asked for calls the policy says need approval
