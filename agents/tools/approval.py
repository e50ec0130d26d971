"""When a tool call needs the user's approval: `always` (every call asks), `never` (no call asks), or an
allow list of tool names / patterns that run without asking while every other tool asks.

The question itself goes through a callback that the front end implements (a prompt in `cpm chat`, a modal in
the TUI). A call that needs approval and is not approved is never run.
"""
from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agents.errors import AgentError

# approve(tool_name, arguments) -> True to run it; may be async.
ApproveFn = Callable[[str, dict], bool | Awaitable[bool]]


@dataclass(frozen=True)
class ApprovalPolicy:
    mode: str                       # "always" | "never" | "allow"
    allow: tuple[str, ...] = ()     # names or fnmatch patterns ("time.*") that run without asking

    @classmethod
    def parse(cls, text: str | None) -> "ApprovalPolicy":
        """`always`, `never`, or a comma list such as `time.*,git.git_status`."""
        text = (text or "always").strip()
        if text in ("always", "never"):
            return cls(text)
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        bad = [n for n in names if "." not in n]
        if not names or bad:
            raise AgentError(f"--approve takes 'always', 'never' or a comma list of server.tool names or patterns "
                             f"(e.g. 'time.*,git.git_status'); got {text!r}")
        return cls("allow", names)

    def needs_approval(self, tool: str) -> bool:
        if self.mode == "always":
            return True
        if self.mode == "never":
            return False
        return not any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.allow)

    def unmatched(self, tool_names: list[str]) -> list[str]:
        """Allow-list entries that match no tool: almost always a typo the user wants to hear about."""
        return [p for p in self.allow if not any(fnmatch.fnmatchcase(n, p) for n in tool_names)]

    def describe(self) -> str:
        if self.mode == "always":
            return "every tool call asks for approval"
        if self.mode == "never":
            return "tools run without asking"
        return "runs without asking: " + ", ".join(self.allow) + "; other tools ask"


async def ask(approve: ApproveFn | None, tool: str, arguments: dict[str, Any]) -> bool:
    """Ask the front end; with no one to ask, the answer is no (a script must opt in with a policy)."""
    if approve is None:
        return False
    answer = approve(tool, arguments)
    if inspect.isawaitable(answer):
        answer = await answer
    return bool(answer)
