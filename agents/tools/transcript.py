"""The readable side of a chat session in SQLite: one row per session (title, model, servers) and one per
event (question, tool call with arguments, approval, result, answer). The graph's checkpointer keeps the
messages themselves in the same file; this is what `--list-sessions` and the JSON trace read.

An event row holds the event's `to_dict()` JSON (`agents.events`); `events()` reads the rows back as typed
events."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agents.errors import AgentError
from agents.events import Event, Question, parse_chat_event

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_sessions (
    id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL, title TEXT, model TEXT, servers TEXT);
CREATE TABLE IF NOT EXISTS chat_events (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (session_id, seq));
"""


class Transcript:
    """Sessions and their events; every write is committed at once so a crash loses nothing written."""

    def __init__(self, db_path: str | Path):
        # The checkpointer holds its own connection to this file; wait for it rather than fail on a lock.
        self._db = sqlite3.connect(str(db_path), timeout=30)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def create(self, session_id: str, model: str = "", servers: list[str] | None = None) -> None:
        now = time.time()
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO chat_sessions VALUES (?, ?, ?, NULL, ?, ?)",
                             (session_id, now, now, model, json.dumps(servers or [])))

    def exists(self, session_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM chat_sessions WHERE id = ?", (session_id,)).fetchone() is not None

    def add(self, session_id: str, event: Event) -> None:
        now = time.time()
        with self._db:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_events WHERE session_id = ?",
                                   (session_id,)).fetchone()[0]
            self._db.execute("INSERT INTO chat_events VALUES (?, ?, ?, ?, ?)",
                             (session_id, seq, now, event.event, json.dumps(event.to_dict(), default=str)))
            if isinstance(event, Question):
                # The first question names the session in listings.
                self._db.execute("UPDATE chat_sessions SET title = COALESCE(title, ?), updated = ? WHERE id = ?",
                                 (event.text[:80], now, session_id))
            else:
                self._db.execute("UPDATE chat_sessions SET updated = ? WHERE id = ?", (now, session_id))

    def events(self, session_id: str) -> list[Event]:
        """The session's events in order; a row this version cannot read is an AgentError that names it."""
        rows = self._db.execute("SELECT seq, data FROM chat_events WHERE session_id = ? ORDER BY seq", (session_id,))
        out = []
        for seq, data in rows:
            try:
                out.append(parse_chat_event(json.loads(data)))
            except ValidationError as exc:   # a kind or field this version does not know
                first = exc.errors()[0]
                where = ".".join(map(str, first["loc"]))
                raise AgentError(f"chat session {session_id}: event {seq} cannot be read: "
                                 f"{where + ': ' if where else ''}{first['msg']}") from exc
            except json.JSONDecodeError as exc:
                raise AgentError(f"chat session {session_id}: event {seq} is not JSON: {exc}") from exc
        return out

    def sessions(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT id, created, updated, title, model FROM chat_sessions "
                                "ORDER BY updated DESC LIMIT ?", (limit,))
        return [dict(zip(("id", "created", "updated", "title", "model"), r)) for r in rows]
