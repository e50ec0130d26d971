"""Crash safety and damaged indexes: a killed `add` leaves the previous index whole; bad files -> one clear error."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval.builder import add_to_index, build_index
from retrieval.config import IndexConfig
from retrieval.errors import RetrievalError
from retrieval.index import Index
from retrieval.layout import LOCK, CorruptIndexError

REPO = Path(__file__).resolve().parents[2]


def snapshot(directory: Path) -> dict[str, str]:
    """name -> sha256 of every file but the (empty) writer lock: proves that nothing was overwritten."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())
            if p.name != LOCK}


def write_jsonl(path: Path, docs) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "title": d.title, "abstract": d.text, "authors": d.authors,
                                "categories": d.categories}) + "\n")
    return path


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"add exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("add did not get that far in time")
        time.sleep(0.05)


def test_retrieval_kill_mid_add_keeps_previous_index(mini_index, corpus_docs, tmp_path, copy_index):
    directory = copy_index(mini_index, tmp_path / "idx")
    before = snapshot(directory)
    gen = json.loads((directory / "manifest.json").read_text())["generation"]
    new_docs = [d for i, d in enumerate(corpus_docs) if i % 10 != 0][:400]
    inputs = write_jsonl(tmp_path / "new.jsonl", new_docs)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "index", "add", str(inputs), "--index", str(directory),
                             "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The next generation's doc store is written (inside an open transaction: its -journal exists) before
    # the embedder loads; kill once the model file is mapped, i.e. while the new chunks are being embedded.
    journal = directory / f"docs.g{gen + 1}.sqlite-journal"
    wait_for(lambda: journal.exists(), proc)
    wait_for(lambda: "model.safetensors" in Path(f"/proc/{proc.pid}/maps").read_text(), proc)
    time.sleep(1.0)
    assert proc.poll() is None, "add finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert journal.exists()  # it did get half-way

    after = snapshot(directory)
    assert {k: v for k, v in after.items() if k in before} == before  # previous generation untouched
    index = Index.open(directory)
    assert index.manifest["generation"] == gen and len(index) == json.loads(
        (directory / "manifest.json").read_text())["counts"]["documents"]
    assert index.search(corpus_docs[20].title, k=5)[0].id == corpus_docs[20].id
    index.close()

    # The next add clears the half-written generation and completes.
    report = add_to_index(new_docs[:3], directory, cfg=IndexConfig(progress=False))
    assert report.added_docs == 3
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) == [f"docs.g{gen + 1}.sqlite", f"index.g{gen + 1}.faiss",
                                                         "manifest.json"]
    assert Index.open(directory).find(new_docs[1].id) is not None


@pytest.mark.parametrize("damage", ["truncate-faiss", "flip-store", "missing-store", "garbage-manifest",
                                    "future-version", "wrong-counts"])
def test_retrieval_damaged_index_is_refused_untouched(mini_index, corpus_docs, tmp_path, copy_index, damage):
    directory = copy_index(mini_index, tmp_path / "idx")
    manifest = json.loads((directory / "manifest.json").read_text())
    faiss_file, store_file = directory / manifest["faiss"]["file"], directory / manifest["store"]["file"]
    if damage == "truncate-faiss":
        faiss_file.write_bytes(faiss_file.read_bytes()[:1000])
    elif damage == "flip-store":
        data = bytearray(store_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        store_file.write_bytes(bytes(data))
    elif damage == "missing-store":
        store_file.unlink()
    elif damage == "garbage-manifest":
        (directory / "manifest.json").write_text("{not json")
    elif damage == "future-version":
        (directory / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    elif damage == "wrong-counts":
        (directory / "manifest.json").write_text(json.dumps({**manifest, "counts": {"documents": 1, "chunks": 1}}))
    before = snapshot(directory)
    with pytest.raises(CorruptIndexError) as err:
        Index.open(directory)
    assert "rebuild" in str(err.value) and str(directory) in str(err.value)
    with pytest.raises(RetrievalError):
        add_to_index(corpus_docs[1:3], directory, cfg=IndexConfig(progress=False))
    with pytest.raises(RetrievalError, match="already holds an index|not empty"):
        build_index(corpus_docs[1:3], directory)
    assert snapshot(directory) == before


def test_retrieval_one_writer_at_a_time(mini_index, corpus_docs, tmp_path, copy_index):
    from retrieval.layout import writer_lock

    directory = copy_index(mini_index, tmp_path / "idx")
    before = snapshot(directory)
    with writer_lock(directory):  # as if another `cpm index add` were running
        with pytest.raises(RetrievalError, match="another `cpm index build/add` is writing"):
            add_to_index(corpus_docs[1:3], directory, cfg=IndexConfig(progress=False))
    assert snapshot(directory) == before


def test_retrieval_not_an_index(tmp_path):
    with pytest.raises(RetrievalError, match="does not exist"):
        Index.open(tmp_path / "nowhere")
    with pytest.raises(CorruptIndexError, match="not an index"):
        Index.open(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RetrievalError, match="not empty"):
        build_index([], tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_retrieval_build_needs_documents(tmp_path):
    with pytest.raises(RetrievalError, match="no documents"):
        build_index([], tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


# Hand edits of manifest.json that once gave tracebacks in `cpm index info / search / add` (issue 25): each is now
# one line naming the key, exit 2, the index untouched.
MANIFEST_EDITS = {
    "embedder a string": lambda m: {**m, "embedder": "minilm"},
    "embedder name a number": lambda m: {**m, "embedder": {**m["embedder"], "name": 7}},
    "embedder dim negative": lambda m: {**m, "embedder": {**m["embedder"], "dim": -1}},
    "counts a list": lambda m: {**m, "counts": [1, 2]},
    "counts a string": lambda m: {**m, "counts": {"documents": "10", "chunks": 1}},
    "generation a string": lambda m: {**m, "generation": "3"},
    "generation null": lambda m: {**m, "generation": None},
    "faiss file outside the folder": lambda m: {**m, "faiss": {**m["faiss"], "file": "../../etc/passwd"}},
    "store sha256 not hex": lambda m: {**m, "store": {**m["store"], "sha256": "zz"}},
    "chunking missing": lambda m: {k: v for k, v in m.items() if k != "chunking"},
    "manifest a list": lambda m: [m],
}


@pytest.mark.parametrize("edit", list(MANIFEST_EDITS))
def test_retrieval_hand_edited_manifest_is_one_line(mini_index, tmp_path, copy_index, capsys, edit):
    from tui.cli import main as cpm

    directory = copy_index(mini_index, tmp_path / "idx")
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps(MANIFEST_EDITS[edit](manifest)))
    before = snapshot(directory)
    for argv in (["index", "info", str(directory)], ["index", "search", "attention", "--index", str(directory)],
                 ["index", "add", str(tmp_path / "none.jsonl"), "--index", str(directory), "--quiet"]):
        (tmp_path / "none.jsonl").write_text(json.dumps({"id": "x1", "title": "T", "abstract": "A"}) + "\n")
        assert cpm(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and "manifest" in err, (argv, err)
    assert snapshot(directory) == before
