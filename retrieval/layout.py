"""The index directory on disk, and how it changes atomically.

DIR/manifest.json names the current generation's files (DIR/index.gN.faiss, DIR/docs.gN.sqlite). A build
or add writes generation N+1 beside N, fsyncs it, then replaces manifest.json (temp file, fsync, rename,
fsync of the directory): until that rename the old manifest still names generation N, which nobody
touched, so a crash at any point leaves the previous index complete. Old generations are deleted after.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retrieval.config import MANIFEST_VERSION
from retrieval.errors import RetrievalError

MANIFEST = "manifest.json"
LOCK = ".writer.lock"
FORMAT = "cpm-retrieval-index"
_GEN_FILE = re.compile(r"^(index|docs)\.g(\d+)\.(faiss|sqlite)(-journal)?$")


class CorruptIndexError(RetrievalError):
    """The index directory's files are missing, damaged, or do not agree with each other."""


class _Part(BaseModel):
    """Strict JSON types, finite numbers; keys this cpm does not read are kept (a newer writer may add some)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")


Count = Annotated[int, Field(ge=0)]


class EmbedderEntry(_Part):
    name: Annotated[str, Field(min_length=1)]
    dim: Annotated[int, Field(ge=1, le=1 << 16)]
    max_seq_length: Annotated[int, Field(ge=1)]


class ChunkingEntry(_Part):
    words: Annotated[int, Field(ge=8)]
    overlap: Count


class FileEntry(_Part):
    # only a generation file of this directory: a hand-edited "../../x" must not make open() read elsewhere
    file: Annotated[str, Field(pattern=r"^(index|docs)\.g\d+\.(faiss|sqlite)$")]
    bytes: Count
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class FaissEntry(FileEntry):
    params: dict[str, Any] = Field(default_factory=dict)


class CountsEntry(_Part):
    documents: Count
    chunks: Count


class Manifest(_Part):
    format: Literal["cpm-retrieval-index"]
    version: int
    generation: Count
    embedder: EmbedderEntry
    chunking: ChunkingEntry
    faiss: FaissEntry
    store: FileEntry
    counts: CountsEntry


def faiss_path(directory: Path, gen: int) -> Path:
    return directory / f"index.g{gen}.faiss"


def store_path(directory: Path, gen: int) -> Path:
    return directory / f"docs.g{gen}.sqlite"


def fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk: a rename is durable only once the data it
    names is flushed, and survives a power loss only once its directory is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> dict:
    """Size and sha256 of a file, recorded in the manifest and checked on open."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}


def write_manifest(directory: Path, manifest: dict) -> None:
    """Atomically replace DIR/manifest.json: write a temp file, fsync it, rename over, fsync the directory."""
    tmp = directory / f".{MANIFEST}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)
    fsync(directory)


def read_manifest(directory: Path) -> dict:
    """The manifest, checked for format and version; CorruptIndexError says what is wrong and what to do."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise RetrievalError(f"index directory {directory} does not exist; create it with `cpm index build`")
    if not path.exists():
        raise CorruptIndexError(f"{directory} is not an index ({MANIFEST} missing); create one with `cpm index build`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptIndexError(f"{path} is not valid JSON ({exc}); the index is damaged: rebuild it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptIndexError(f"{path} is not a cpm retrieval manifest; rebuild the index")
    version = manifest.get("version")
    if version != MANIFEST_VERSION:
        raise CorruptIndexError(f"{path} has format version {version}; this cpm reads version {MANIFEST_VERSION}: "
                                "rebuild the index with this cpm")
    try:
        Manifest.model_validate(manifest)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        got = "missing" if err["type"] == "missing" else f"got {err['input']!r}"[:80]
        raise CorruptIndexError(f"{path}: {key}: {err['msg'].lower()} ({got}); the index is damaged: "
                                "rebuild it") from None
    return manifest


def verify_file(directory: Path, entry: dict, what: str) -> Path:
    """Check that a file named by the manifest exists with the recorded size and sha256."""
    path = directory / entry["file"]
    if not path.exists():
        raise CorruptIndexError(f"{what} file {path} is missing; the index is damaged: rebuild it")
    actual = file_digest(path)
    if actual["bytes"] != entry.get("bytes") or actual["sha256"] != entry.get("sha256"):
        raise CorruptIndexError(f"{what} file {path} does not match its manifest checksum (damaged or replaced); "
                                "rebuild the index")
    return path


def only_leftovers(directory: Path) -> bool:
    """True when `directory` holds nothing but files of an interrupted first build (safe to reuse)."""
    return all(_GEN_FILE.match(p.name) or p.name.startswith(f".{MANIFEST}.tmp-") or p.name == LOCK
               for p in directory.iterdir())


@contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """One writer per index: a second `build`/`add` on the same directory fails at once instead of both
    writing the same next generation. flock is released by the kernel if the holder is killed."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RetrievalError(f"another `cpm index build/add` is writing {directory}; wait for it to finish") from None
    try:
        yield
    finally:
        os.close(fd)


def remove_other_generations(directory: Path, keep: int) -> None:
    """Delete files of generations other than `keep`: old ones, and leftovers of an interrupted write."""
    for path in directory.iterdir():
        m = _GEN_FILE.match(path.name)
        if m and int(m.group(2)) != keep:
            path.unlink(missing_ok=True)
    for path in directory.glob(f".{MANIFEST}.tmp-*"):
        path.unlink(missing_ok=True)
