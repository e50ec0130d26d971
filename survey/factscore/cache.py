"""Per-claim results cached in SQLite, so a re-run after a crash or Ctrl-C resumes where it stopped.

The key is a hash of everything that determines the result: the kind of step, its input (a sentence or a
claim), the evidence passage ids, the model name, the judge and the seed. Values are JSON.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from survey.errors import SurveyError


def cache_key(kind: str, text: str, evidence_ids: list[str], model: str, judge: str, seed: int) -> str:
    payload = json.dumps([kind, text, sorted(evidence_ids), model, judge, seed], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class ClaimCache:
    """A key -> JSON table; `None` path keeps it in memory (one run, no resume)."""

    def __init__(self, path: str | Path | None = None):
        target = ":memory:" if path is None else str(path)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(target)
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise SurveyError(f"cache {target} is not a usable SQLite file ({exc}); delete it or pick another")
        self.hits = 0

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        # committed per claim: a crash loses at most the claim in flight
        self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)", (key, json.dumps(value)))
        self._db.commit()

    def close(self) -> None:
        self._db.close()
