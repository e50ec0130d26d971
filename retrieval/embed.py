"""Sentence-transformers embeddings: batched, normalised (so inner product = cosine), GPU when present."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from retrieval.errors import RetrievalError


class EmbedderError(RetrievalError):
    """The embedder named by the user cannot be found or loaded."""


def resolve_embedder(name: str) -> Path:
    """Alias (`minilm`) or local directory -> the sentence-transformers model directory on this machine."""
    from engine.assets import resolve
    from engine.errors import EngineError

    try:
        return resolve(name)
    except EngineError as exc:
        raise EmbedderError(f"embedder: {exc}") from None


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except Exception as exc:  # any load failure is the user's directory being wrong; keep its reason
        raise EmbedderError(f"cannot load embedder from {path}: {exc}") from None


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """A loaded model plus the settings that must stay the same between build, add and search."""

    def __init__(self, name: str = "minilm", device: str = "auto", max_seq_length: int | None = None):
        self.name = name
        self.path = resolve_embedder(name)
        self.model = _load(str(self.path), _device(device))
        # The model object is shared (cached); set the window on every call instead of mutating it here.
        self.max_seq_length = max_seq_length or int(self.model.max_seq_length)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False,
               label: str = "embedding") -> np.ndarray:
        """float32 [len(texts), dim], each row L2-normalised; a rich progress bar when `progress`."""
        self.model.max_seq_length = self.max_seq_length
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Sorting by length puts similar lengths in one batch, so little time goes to padding.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with _progress(progress, label, len(texts)) as advance:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                vecs = self.model.encode([texts[i] for i in idx], batch_size=batch_size,
                                         normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=False)
                out[idx] = vecs
                advance(len(idx))
        return out

    def encode_query(self, query: str) -> np.ndarray:
        """[1, dim] normalised vector for one query."""
        return self.encode([query], batch_size=1)


class _progress:
    """Context manager yielding `advance(n)`; a rich bar on stderr when enabled, a no-op otherwise."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
