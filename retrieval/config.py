"""Typed settings for building an index; the ones that shape the index are recorded in its manifest."""
from __future__ import annotations

from dataclasses import dataclass, field

from retrieval.errors import RetrievalError

MANIFEST_VERSION = 1


@dataclass
class ChunkConfig:
    """How long documents are cut: word windows that overlap so no sentence is lost at a border."""

    words: int = 200      # ~ MiniLM's 256 word-piece window, so a chunk is embedded whole
    overlap: int = 40

    def __post_init__(self) -> None:
        if self.words < 8:
            raise RetrievalError(f"chunk size {self.words} words is too small (use 8 or more)")
        if not 0 <= self.overlap < self.words:
            raise RetrievalError(f"chunk overlap {self.overlap} must be >= 0 and below the chunk size {self.words}")


@dataclass
class FaissConfig:
    """Flat inner product below `ivf_threshold` vectors; IVF (trained on a sample) at or above it."""

    ivf_threshold: int = 50_000
    nlist: int | None = None          # None: about 4 * sqrt(n), the FAISS wiki's rule of thumb
    nprobe: int = 16
    train_sample: int = 100_000       # vectors used to train the IVF centroids

    def __post_init__(self) -> None:
        if self.ivf_threshold < 1 or self.nprobe < 1:
            raise RetrievalError("ivf threshold and nprobe must be positive")


@dataclass
class IndexConfig:
    """Everything `build`/`add` need besides the documents."""

    embedder: str = "minilm"          # alias from engine.assets, or a local sentence-transformers directory
    device: str = "auto"              # "auto": CUDA when present, else CPU
    batch_size: int = 64
    max_seq_length: int | None = None  # None: the model's own (256 for MiniLM); lower is faster on CPU
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    faiss: FaissConfig = field(default_factory=FaissConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise RetrievalError(f"batch size must be positive, not {self.batch_size}")
        if self.max_seq_length is not None and self.max_seq_length < 8:
            raise RetrievalError(f"max sequence length {self.max_seq_length} is too small (use 8 or more)")
