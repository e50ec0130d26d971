"""FR-Spec's frequency-ranked vocabulary: count token ids over a corpus, save/load `freq_{r}.pt`.

The file is what CPM.cu and thunlp/FR-Spec write: `torch.save` of a plain Python list of int ids, most
frequent first, length r, EOS guaranteed in it (appended last when not among the r most frequent; the list
stays r long because CPM.cu copies exactly r ids). See docs/frspec.md §2.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

import torch

from engine.errors import EngineError

TEXT_FIELDS = ("text", "content")  # a JSONL record's text, else title + abstract (arXiv records)


def json_records(path: Path) -> Iterator[dict]:
    """The objects of a JSONL file (.jsonl or .jsonl.gz), one a non-blank line; a line that is not JSON is an
    error naming the file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise EngineError(f"{path}:{n}: not a JSON line (a .jsonl file holds one object per line)") from None
            yield rec


def corpus_texts(path: Path) -> Iterator[str]:
    """Texts of a corpus file: JSONL (.jsonl / .jsonl.gz: `text`, else `title` + `abstract`) or plain text
    (one document per blank-line-separated paragraph block)."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"corpus {path} not found (give a .txt, .jsonl or .jsonl.gz file)")
    if ".jsonl" in path.suffixes or ".json" in path.suffixes:
        for rec in json_records(path):
            text = next((rec[k] for k in TEXT_FIELDS if isinstance(rec.get(k), str)), None)
            if text is None:
                text = "\n".join(rec[k] for k in ("title", "abstract") if isinstance(rec.get(k), str))
            if text:
                yield text
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        block: list[str] = []
        for line in f:
            if line.strip():
                block.append(line)
            elif block:
                yield "".join(block)
                block = []
        if block:
            yield "".join(block)


def count_tokens(tokenizer, texts, vocab_size: int, batch: int = 256) -> torch.Tensor:
    """int64 [vocab_size] occurrence counts of each id over the texts (no special tokens added)."""
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    buf: list[str] = []

    def flush() -> None:
        ids = [i for seq in tokenizer(buf, add_special_tokens=False)["input_ids"] for i in seq]
        if ids:
            counts.add_(torch.bincount(torch.tensor(ids, dtype=torch.int64), minlength=vocab_size)[:vocab_size])
        buf.clear()

    for t in texts:
        buf.append(t)
        if len(buf) >= batch:
            flush()
    if buf:
        flush()
    return counts


def rank(counts: torch.Tensor, top: int, eos_id: int | None) -> list[int]:
    """The `top` most frequent ids (ties: smaller id first), EOS last if it was not among them."""
    if not 0 < top <= counts.numel():
        raise EngineError(f"--top must be in 1..{counts.numel()} (the vocabulary size), got {top}")
    order = torch.sort(counts, descending=True, stable=True).indices
    ids = order[:top].tolist()
    if eos_id is not None and eos_id not in ids:
        ids = ids[:top - 1] + [int(eos_id)]
    return ids


def out_path(out: Path, top: int) -> Path:
    """`out` itself when it names a file, `out/freq_{top}.pt` when it is (or ends like) a directory."""
    out = Path(out)
    return out / f"freq_{top}.pt" if out.is_dir() or out.suffix == "" else out


def save_freq(ids: list[int], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save([int(i) for i in ids], path)  # a plain list, as the published files are
    return path


def load_freq(path: Path, vocab_size: int | None = None) -> torch.Tensor:
    """int64 [r] draft index -> full vocabulary id, validated (unique, in range)."""
    path = Path(path)
    try:
        raw = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise EngineError(f"frequency file {path} not found") from None
    except Exception as exc:  # torch raises several types for a non-torch file
        raise EngineError(f"{path}: not a torch-saved frequency list ({type(exc).__name__})") from None
    ids = torch.as_tensor(raw, dtype=torch.int64).flatten()
    if ids.numel() == 0:
        raise EngineError(f"{path}: empty frequency list")
    if vocab_size is not None and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise EngineError(f"{path}: token ids outside the target's vocabulary 0..{vocab_size - 1} "
                          "(the frequency file was built for another tokenizer)")
    if torch.unique(ids).numel() != ids.numel():
        raise EngineError(f"{path}: the frequency list repeats token ids")
    return ids


def find_freq(directory: Path) -> Path | None:
    """The head folder's `freq_{r}.pt` (the largest r when several)."""
    files = sorted(Path(directory).glob("freq_*.pt"),
                   key=lambda p: int(p.stem[5:]) if p.stem[5:].isdigit() else -1)
    return files[-1] if files else None


def build_freq(model: str, corpus: Path, top: int, out: Path) -> tuple[Path, list[int], int]:
    """`cpm spec freq`: tokenize the corpus with the model's tokenizer, rank, save. -> (path, ids, tokens)."""
    from engine.assets import resolve
    from engine.tokenizer import load_tokenizer

    tok = load_tokenizer(resolve(model))
    counts = count_tokens(tok, corpus_texts(corpus), len(tok))
    total = int(counts.sum())
    if total == 0:
        raise EngineError(f"corpus {corpus} holds no text")
    ids = rank(counts, top, tok.eos_token_id)
    return save_freq(ids, out_path(out, top)), ids, total
