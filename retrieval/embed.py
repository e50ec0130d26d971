"""Sentence-transformers embeddings: batched, normalised (so inner product = cosine), GPU when present."""
from __future__ import annotations

import functools
import warnings
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
    from transformers.utils import logging as hf_logging

    # transformers draws a "Loading weights 103/103" bar on every load: noise on each search and survey.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except Exception as exc:  # any load failure is the user's directory being wrong; keep its reason
        raise EmbedderError(f"cannot load embedder from {path}: {exc}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """A model plus the settings that must stay the same between build, add and search.

    On CPU, one-query searches run on a cached trace of the model (retrieval/query_encoder.py) and the
    sentence-transformers model is only loaded when something needs it (batches, or making the trace).
    """

    def __init__(self, name: str = "minilm", device: str = "auto", max_seq_length: int | None = None):
        from retrieval import query_encoder

        self.name = name
        self.path = resolve_embedder(name)
        self.device = _device(device)
        self._model = None
        self._query = query_encoder.QueryEncoder.load(self.path, max_seq_length) if self.device == "cpu" else None
        if self._query is not None:
            self.max_seq_length = self._query.max_seq_length
            self.dim = self._query.dim
        else:
            # The model object is shared (cached); set the window on every call instead of mutating it here.
            self.max_seq_length = (max_seq_length or query_encoder.native_window(self.path)
                                   or int(self.model.max_seq_length))
            get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            self.dim = int(get_dim())

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use."""
        if self._model is None:
            self._model = _load(str(self.path), self.device)
        return self._model

    def cache_query_trace(self) -> None:
        """Make the cached trace that later one-query searches start from (CPU only; best effort)."""
        from retrieval import query_encoder

        if self.device != "cpu" or self._query is not None:
            return
        try:
            query_encoder.save_trace(self.model, self.path)
        except (OSError, RuntimeError, AttributeError) as exc:  # no writable cache; a model it cannot trace
            warnings.warn(f"query embedder not cached ({exc}); searches load the full model", stacklevel=2)
        finally:
            self.model.max_seq_length = self.max_seq_length

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False,
               label: str = "embedding") -> np.ndarray:
        """float32 [len(texts), dim], each row L2-normalised; progress on stderr when `progress`."""
        from retrieval.progress import WorkBar

        self.model.max_seq_length = self.max_seq_length
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Sorting by length puts similar lengths in one batch, so little time goes to padding.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        # A text's cost ~ its word pieces, capped by the window; ~5 characters a piece is close enough for an ETA.
        cost = np.minimum([len(t) for t in texts], 5 * self.max_seq_length) + 1
        with WorkBar(progress, label, len(texts), float(cost.sum())) as advance:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                vecs = self.model.encode([texts[i] for i in idx], batch_size=batch_size,
                                         normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=False)
                out[idx] = vecs
                advance(len(idx), float(cost[idx].sum()))
        return out

    def encode_query(self, query: str) -> np.ndarray:
        """[1, dim] normalised vector for one query; the first one on CPU also caches the trace."""
        if self._query is not None:
            return self._query.encode(query)
        vector = self.encode([query], batch_size=1)
        self.cache_query_trace()
        return vector
