"""`cpm serve` start-up mistakes are one line and exit 2, before any model loads; `--index` picks the embedder
the index's manifest names."""
from __future__ import annotations

import json

import pytest

from tui.cli import main as cpm


@pytest.mark.parametrize("argv, needle", [
    (["serve", "--port", "0"], "--port"),
    (["serve", "--max-batch", "0"], "--max-batch"),
    (["serve", "--max-running", "0"], "--max-running"),
    (["serve", "--index", "/no/such/index"], "does not exist"),
])
def test_start_up_mistakes_are_one_line(capsys, argv, needle):
    assert cpm(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_a_hand_edited_index_manifest_stops_serve(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "cpm-retrieval-index", "version": 1,
                                                        "generation": 1, "embedder": "minilm"}))
    assert cpm(["serve", "--index", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "embedder" in err and "rebuild" in err, err


def test_index_embedder_is_the_manifests(tmp_path):
    from tui.commands.serve import _index_embedder

    manifest = {"format": "cpm-retrieval-index", "version": 1, "generation": 1,
                "embedder": {"name": "minilm", "dim": 384, "max_seq_length": 256},
                "chunking": {"words": 200, "overlap": 40},
                "faiss": {"file": "index.g1.faiss", "bytes": 0, "sha256": "0" * 64},
                "store": {"file": "docs.g1.sqlite", "bytes": 0, "sha256": "0" * 64},
                "counts": {"documents": 0, "chunks": 0}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    embedder = _index_embedder(str(tmp_path), "cpu")
    assert embedder.name == "minilm" and embedder.dim == 384
