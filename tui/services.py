"""What the TUI talks to — the chat model, the paper index, the FactScore judge, the MCP servers — created
lazily, off the UI thread; and the stores it lists from (survey checkpoints, chat sessions).

Loading the engine takes seconds, so nothing here runs at app start: the first worker that needs a model
builds it (under a lock, once) and later workers reuse it.
"""
from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from tui.settings import TuiSettings

from survey.factscore.choose import JUDGES  # noqa: F401  (the TUI lists the same choices as the CLI)


class Services:
    def __init__(self, settings: TuiSettings, chat_model: Any | None = None) -> None:
        self.settings = settings
        self._chat_model = chat_model
        self._judges: dict[str, Any] = {}
        self._lock = threading.Lock()

    def chat_model(self):
        """The langchain chat model for the current settings (built on first use; blocking: call from a worker)."""
        with self._lock:
            if self._chat_model is None:
                from agents.chat import make_chat_model

                s = self.settings
                self._chat_model = make_chat_model(backend=s.backend, model=s.model, base_url=s.base_url)
            return self._chat_model

    def index(self):
        """The paper index of the settings (blocking); a missing setting says where to set it."""
        from retrieval import Index
        from survey.errors import SurveyError

        if not self.settings.index_dir:
            raise SurveyError("no index directory: set one in Settings (F4) or start with `cpm tui --index DIR`")
        index = Index.open(self.settings.index_dir)
        if len(index) == 0:
            raise SurveyError(f"index {self.settings.index_dir} holds no documents: add papers with "
                              f"`cpm index add FILE --index {self.settings.index_dir}`")
        return index

    def factscore_judge(self, choice: str = "auto", extract: str = "model") -> tuple[Any, Any, str]:
        """(claim-extraction model or None, judge, model name), chosen as `cpm eval factscore` chooses them: auto
        is the embedding judge (no language model); the chat model is loaded only for a judge that reads it
        (likelihood, chat) or for claims extracted by the model. Judges are kept: loading one takes long."""
        from survey.factscore.choose import choose_judge, needs_model

        if not needs_model(choice) and extract == "sentence":   # as `cpm eval factscore`: no language model at all
            with self._lock:
                if choice not in self._judges:
                    self._judges[choice] = choose_judge(choice, None, "none")
                return None, self._judges[choice], "none"
        llm = self.chat_model()   # greedy by default (temperature 0), so claims and verdicts repeat
        name = str(getattr(llm, "model_name", None) or self.settings.model)
        with self._lock:
            if choice not in self._judges:
                self._judges[choice] = choose_judge(choice, llm, name)
            return llm, self._judges[choice], name

    def reconfigure(self, settings: TuiSettings) -> None:
        """New settings: drop what depends on the old ones so the next use rebuilds it."""
        with self._lock:
            if (settings.backend, settings.model, settings.base_url) != (
                    self.settings.backend, self.settings.model, self.settings.base_url):
                self._chat_model = None
                self._judges.clear()
            self.settings = settings

    def describe(self) -> str:
        s = self.settings
        where = s.base_url if s.backend == "openai" else "in-process"
        return f"{s.model} · {s.backend} ({where})"


def _checkpoints(db_path: Path):
    """A read-only connection and a saver over the survey checkpoint database."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
    return conn, SqliteSaver(conn)


def _latest(saver, thread_id: str):
    """(state values, checkpoint time) of a thread's newest checkpoint; ({}, None) when there is none."""
    found = saver.get_tuple({"configurable": {"thread_id": thread_id}})
    if found is None:
        return {}, None
    return found.checkpoint.get("channel_values", {}), datetime.fromisoformat(found.checkpoint["ts"]).astimezone()


def survey_threads(db_path: str | Path, interrupted_only: bool = True) -> list[dict]:
    """Surveys in the checkpoint database, newest first: thread id, topic, sections done / total, last update.
    Interrupted ones are those with no rendered Markdown yet (the last graph step never ran)."""
    db_path = Path(db_path)
    if not db_path.exists():
        return []
    conn, saver = _checkpoints(db_path)
    try:
        threads = [r[0] for r in conn.execute("SELECT DISTINCT thread_id FROM checkpoints WHERE checkpoint_ns = ''")]
        rows = []
        for thread in threads:
            values, updated = _latest(saver, thread)
            if not values.get("topic") or (interrupted_only and values.get("markdown")):
                continue
            rows.append({"thread_id": thread, "topic": values["topic"], "done": len(values.get("sections") or {}),
                         "total": (values.get("settings") or {}).get("sections", 0), "updated": updated})
    finally:
        conn.close()
    return sorted(rows, key=lambda r: r["updated"], reverse=True)


def survey_sources(db_path: str | Path, thread_id: str) -> list[dict]:
    """The cited papers of the sections a survey's checkpoint already holds, in section order (what a resumed
    survey reuses; the references panel lists them as the live run would have)."""
    conn, saver = _checkpoints(Path(db_path))
    try:
        sections = _latest(saver, thread_id)[0].get("sections") or {}
    finally:
        conn.close()
    out = []
    for key in sorted(sections, key=int):
        cited = set(sections[key].get("cited_ids", []))
        out += [src for src in sections[key].get("sources", []) if src["id"] in cited]
    return out


def chat_sessions(db_path: str | Path, limit: int = 50) -> list[dict]:
    """Chat sessions in the transcript database, most recently used first (id, created, updated, title, model)."""
    from agents.tools.transcript import Transcript

    if not Path(db_path).exists():
        return []
    transcript = Transcript(db_path)
    try:
        return transcript.sessions(limit)
    finally:
        transcript.close()


def chat_events(db_path: str | Path, session_id: str) -> list:
    """The recorded events of one session, typed (`agents.events`: Question, ToolCall, Approval, ToolResult,
    Answer, ...)."""
    from agents.tools.transcript import Transcript

    transcript = Transcript(db_path)
    try:
        if not transcript.exists(session_id):
            from agents.errors import AgentError

            raise AgentError(f"no chat session {session_id!r} in {db_path}")
        return transcript.events(session_id)
    finally:
        transcript.close()
