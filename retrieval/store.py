"""SQLite doc store: documents (for citations) and chunks (FAISS row -> document, chunk text)."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from retrieval.errors import RetrievalError
from retrieval.types import Document

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, authors TEXT NOT NULL, year INTEGER,
    text TEXT NOT NULL, url TEXT, categories TEXT NOT NULL,
    title_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_title_key ON documents(title_key);
CREATE TABLE IF NOT EXISTS chunks (
    row INTEGER PRIMARY KEY,            -- the vector's id in the FAISS index
    doc_id TEXT NOT NULL REFERENCES documents(id),
    chunk_no INTEGER NOT NULL,
    text TEXT NOT NULL
);
"""
_DOC_COLUMNS = "id, title, authors, year, text, url, categories"


def title_key(title: str) -> str:
    """Lower-case, alphanumerics only: the same title typed by hand or from another source matches."""
    return "".join(ch for ch in title.lower() if ch.isalnum())


class DocStore:
    """One SQLite file; opened read-only for search, read-write only while a new generation is written."""

    def __init__(self, path: Path, readonly: bool = True):
        self.path = Path(path)
        uri = f"file:{self.path}?mode={'ro' if readonly else 'rwc'}"
        try:
            # check_same_thread=False: the TUI searches from worker threads; reads only, so this is safe.
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            if not readonly:
                self.conn.executescript(_SCHEMA)
            self.conn.execute("SELECT 1 FROM documents LIMIT 1").fetchall()
            self.conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise RetrievalError(f"doc store {self.path} is unreadable ({exc}); rebuild the index") from None

    def close(self) -> None:
        self.conn.close()

    def add(self, doc: Document, chunks: list[str], first_row: int) -> None:
        """Insert a document and its chunks, whose vectors get FAISS rows first_row, first_row+1, ..."""
        self.conn.execute(f"INSERT INTO documents ({_DOC_COLUMNS}, title_key) VALUES (?,?,?,?,?,?,?,?)",
                          (doc.id, doc.title, doc.authors, doc.year, doc.text, doc.url, doc.categories,
                           title_key(doc.title)))
        self.conn.executemany("INSERT INTO chunks (row, doc_id, chunk_no, text) VALUES (?,?,?,?)",
                              [(first_row + i, doc.id, i, t) for i, t in enumerate(chunks)])

    def commit(self) -> None:
        self.conn.commit()

    def has(self, doc_ids: Iterable[str]) -> set[str]:
        """Which of `doc_ids` are already stored."""
        ids = list(doc_ids)
        present: set[str] = set()
        for start in range(0, len(ids), 500):  # SQLite caps bound parameters per statement
            part = ids[start:start + 500]
            rows = self.conn.execute(f"SELECT id FROM documents WHERE id IN ({','.join('?' * len(part))})", part)
            present.update(r[0] for r in rows)
        return present

    def counts(self) -> tuple[int, int]:
        """(documents, chunks)."""
        docs = self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def get(self, doc_id: str) -> Document | None:
        row = self.conn.execute(f"SELECT {_DOC_COLUMNS} FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return Document(*row) if row else None

    def find_title(self, title: str) -> Document | None:
        row = self.conn.execute(f"SELECT {_DOC_COLUMNS} FROM documents WHERE title_key = ? LIMIT 1",
                                (title_key(title),)).fetchone()
        return Document(*row) if row else None

    def chunks_for_rows(self, rows: list[int]) -> dict[int, tuple[str, int, str]]:
        """FAISS row -> (doc_id, chunk_no, chunk text)."""
        out: dict[int, tuple[str, int, str]] = {}
        for start in range(0, len(rows), 500):
            part = [int(r) for r in rows[start:start + 500]]
            q = f"SELECT row, doc_id, chunk_no, text FROM chunks WHERE row IN ({','.join('?' * len(part))})"
            out.update((r, (d, c, t)) for r, d, c, t in self.conn.execute(q, part))
        return out

    def all_chunks(self) -> list[tuple[int, str, str]]:
        """(row, title, chunk text) for every chunk, in row order (the BM25 corpus)."""
        q = "SELECT c.row, d.title, c.text FROM chunks c JOIN documents d ON d.id = c.doc_id ORDER BY c.row"
        return list(self.conn.execute(q))

    def docs_meta(self, doc_ids: Iterable[str]) -> dict[str, Document]:
        """id -> Document without its (long) text, for building hits."""
        ids = list(set(doc_ids))
        out: dict[str, Document] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            q = f"SELECT id, title, authors, year, '', url, categories FROM documents WHERE id IN ({','.join('?' * len(part))})"
            out.update((r[0], Document(*r)) for r in self.conn.execute(q, part))
        return out
