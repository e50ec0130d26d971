"""A TorchScript copy of the embedder for one query at a time, cached per user, so a search starts in ~1 s.

Why: importing sentence-transformers (which pulls transformers, torch._dynamo, scikit-learn) costs ~3.5 s of
CPU before a single query is embedded; `cpm index search` and every survey paid it. `torch.jit.trace` records
the library's own forward pass (transformer, pooling, normalisation) once; later processes load that graph
with torch alone and tokenize with `tokenizers`. Nothing is re-implemented: a trace is only kept after it
reproduced `SentenceTransformer.encode` on probe texts of several lengths, and it is only used for a single
unpadded query (the case it was traced for), never for batches.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

FORMAT = 1  # bump when what is cached changes
# Short, accented, symbol-laden, and longer than any window: the shapes a trace must generalise to.
PROBES = ("x", "Speculative decoding for long-context LLM inference",
          "Vázquez & Müller: KV-cache ≤ 4 GiB — sparse attention (InfLLM v2) ✓",
          "retrieval augmented generation " * 120)
TOLERANCE = 1e-4


def cache_root() -> Path:
    """$XDG_CACHE_HOME/cpm-suite/query-encoders (~/.cache/... by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cpm-suite" / "query-encoders"


def cache_dir(model_dir: Path) -> Path:
    """One folder per model directory, torch version and model files: a changed file gives a new folder."""
    import torch

    h = hashlib.sha256(f"{FORMAT}|{torch.__version__}|{model_dir.resolve()}".encode())
    for f in sorted(model_dir.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"|{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return cache_root() / h.hexdigest()[:20]


def native_window(model_dir: Path) -> int | None:
    """The model's own window in word pieces (sentence_bert_config.json), or None when it does not say."""
    try:
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class QueryEncoder:
    """Loaded trace + tokenizer: `encode(query) -> [1, dim]` float32, L2-normalised."""

    def __init__(self, module, tokenizer, dim: int, max_seq_length: int):
        self.module, self.tokenizer, self.dim, self.max_seq_length = module, tokenizer, dim, max_seq_length
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_seq_length)

    @classmethod
    def load(cls, model_dir: Path, max_seq_length: int | None) -> "QueryEncoder | None":
        """The cached trace of `model_dir`, or None when there is none (or it cannot be read)."""
        folder = cache_dir(model_dir)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if not meta.get("ok"):
                return None
            import torch
            from tokenizers import Tokenizer

            with warnings.catch_warnings():
                # torch 2.13 marks TorchScript deprecated in favour of torch.export, whose loader costs ~3 s
                # of imports (dynamo, sympy): the very start-up this file exists to avoid (docs/decisions.md).
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(folder / "encoder.pt"), map_location="cpu").eval()
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except (OSError, ValueError, RuntimeError, KeyError, AttributeError):  # AttributeError: no torch.jit
            return None
        return cls(module, tokenizer, int(meta["dim"]), max_seq_length or int(meta["max_seq_length"]))

    def encode(self, query: str) -> np.ndarray:
        import torch

        enc = self.tokenizer.encode(query.strip())
        features = [torch.tensor([x], dtype=torch.long) for x in (enc.ids, enc.attention_mask, enc.type_ids)]
        with torch.no_grad():
            return self.module(*features).numpy().astype(np.float32, copy=False)


def _wrapper(st_model):
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """The SentenceTransformer forward on one tokenized text, as plain tensors (what a trace can record)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.model({"input_ids": input_ids, "attention_mask": attention_mask,
                              "token_type_ids": token_type_ids})["sentence_embedding"]
            return torch.nn.functional.normalize(out, dim=-1)  # idempotent where the model normalises already

    return SentenceEmbedding(st_model).eval()


@contextlib.contextmanager
def _quiet():
    """Tracing reads every attribute of the model: TracerWarnings (the probes check what they warn about)
    and deprecation notices of attributes nobody uses would otherwise reach the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("transformers", "sentence_transformers")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def save_trace(st_model, model_dir: Path) -> bool:
    """Trace `st_model` (a CPU SentenceTransformer loaded from `model_dir`) into the cache, if it checks out.

    A trace that does not reproduce `encode` on every probe is not kept; a marker records that, so the
    next process does not try again. Returns whether a usable trace is cached.
    """
    import torch
    from tokenizers import Tokenizer

    if not (model_dir / "tokenizer.json").is_file():
        return False  # only a fast (Rust) tokenizer loads without transformers
    folder = cache_dir(model_dir)
    if (folder / "meta.json").exists():
        return bool(json.loads((folder / "meta.json").read_text()).get("ok"))
    dim = int((getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension)())
    window = native_window(model_dir) or int(st_model.max_seq_length)
    st_model.max_seq_length = window  # the shared model's window is set by each caller before it encodes
    first = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(PROBES[1])
    example = tuple(torch.tensor([x], dtype=torch.long) for x in (first.ids, first.attention_mask, first.type_ids))
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(_wrapper(st_model), example, check_trace=False)
    encoder = QueryEncoder(traced, Tokenizer.from_file(str(model_dir / "tokenizer.json")), dim, window)
    want = st_model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    got = np.concatenate([encoder.encode(p) for p in PROBES])
    ok = bool(np.abs(want - got).max() <= TOLERANCE)
    folder.mkdir(parents=True, exist_ok=True)
    if ok:
        tmp = folder / f"encoder.pt.{os.getpid()}"
        traced.save(str(tmp))
        os.replace(tmp, folder / "encoder.pt")
    meta = folder / f"meta.json.{os.getpid()}"
    meta.write_text(json.dumps({"ok": ok, "dim": dim, "max_seq_length": window, "model": str(model_dir)}))
    os.replace(meta, folder / "meta.json")  # last: a reader sees meta.json only once encoder.pt is complete
    return ok
