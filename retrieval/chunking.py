"""Cut a document's text into overlapping word windows."""
from __future__ import annotations

from retrieval.config import ChunkConfig


def chunk_text(text: str, cfg: ChunkConfig) -> list[str]:
    """Word windows of `cfg.words`, each starting `words - overlap` after the previous; short texts stay whole.

    A document always yields at least one chunk (its text may be empty: the title is embedded with it).
    """
    words = text.split()
    if len(words) <= cfg.words:
        return [" ".join(words)]
    step = cfg.words - cfg.overlap
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start:start + cfg.words]))
        if start + cfg.words >= len(words):
            break  # this window reached the end; another would only repeat the overlap
    return chunks
