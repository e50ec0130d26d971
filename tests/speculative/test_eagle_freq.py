"""FR-Spec frequency files: ranking rules, the published on-disk format, corpus readers and `cpm spec freq`."""
from __future__ import annotations

import gzip
import json

import pytest
import torch

from engine.errors import EngineError
from engine.speculative.freq import corpus_texts, find_freq, load_freq, out_path, rank, save_freq


def test_rank_orders_by_count_ties_by_id_and_keeps_eos():
    counts = torch.tensor([5, 9, 9, 0, 7, 1])
    assert rank(counts, 3, eos_id=1) == [1, 2, 4]  # EOS already among the top 3: unchanged
    assert rank(counts, 3, eos_id=3) == [1, 2, 3]  # absent: the last slot becomes EOS, length stays r
    assert rank(counts, 6, eos_id=None) == [1, 2, 4, 0, 5, 3]
    with pytest.raises(EngineError, match="--top"):
        rank(counts, 7, eos_id=None)


def test_published_format_is_a_plain_list(tmp_path):
    path = save_freq([7, 3, 5], tmp_path / "freq_3.pt")
    raw = torch.load(path, weights_only=True)
    assert type(raw) is list and raw == [7, 3, 5]  # what CPM.cu's torch.tensor(torch.load(f)) expects
    assert load_freq(path, vocab_size=8).tolist() == [7, 3, 5]
    assert find_freq(tmp_path) == path
    assert out_path(tmp_path, 16) == tmp_path / "freq_16.pt" and out_path(tmp_path / "x.pt", 16) == tmp_path / "x.pt"
    with pytest.raises(EngineError, match="outside the target's vocabulary"):
        load_freq(path, vocab_size=6)
    save_freq([1, 1], tmp_path / "dup.pt")
    with pytest.raises(EngineError, match="repeats"):
        load_freq(tmp_path / "dup.pt")
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(EngineError, match="not a torch-saved"):
        load_freq(tmp_path / "junk.pt")


def test_corpus_readers(tmp_path):
    j = tmp_path / "c.jsonl.gz"
    with gzip.open(j, "wt") as f:
        f.write(json.dumps({"text": "alpha"}) + "\n\n" + json.dumps({"title": "T", "abstract": "beta"}) + "\n")
    assert list(corpus_texts(j)) == ["alpha", "T\nbeta"]
    t = tmp_path / "c.txt"
    t.write_text("one\ntwo\n\n\nthree\n")
    assert list(corpus_texts(t)) == ["one\ntwo\n", "three\n"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(EngineError, match="bad.jsonl:1"):
        list(corpus_texts(bad))
    with pytest.raises(EngineError, match="not found"):
        list(corpus_texts(tmp_path / "missing.jsonl"))


def test_cpm_spec_freq_on_real_corpus(smollm2_path, corpus_path, tmp_path, capsys):
    """Real tokenizer, real papers: the file ranks ids by their true counts over the corpus."""
    from tui.cli import main
    from engine.tokenizer import load_tokenizer

    small = tmp_path / "papers.jsonl"
    small.write_text("".join(corpus_path.read_text().splitlines(keepends=True)[:60]))
    assert main(["spec", "freq", "--model", str(smollm2_path), "--corpus", str(small), "--top", "512",
                 "--out", str(tmp_path / "fr"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ids = torch.load(tmp_path / "fr" / "freq_512.pt", weights_only=True)
    assert summary["out"].endswith("freq_512.pt") and len(ids) == 512 and len(set(ids)) == 512
    tok = load_tokenizer(smollm2_path)
    assert tok.eos_token_id in ids
    counts = torch.zeros(len(tok), dtype=torch.long)
    for text in corpus_texts(small):
        for i in tok(text, add_special_tokens=False)["input_ids"]:
            counts[i] += 1
    ranked = [i for i in ids if i != tok.eos_token_id]
    c = counts[ranked]
    assert bool((c[:-1] >= c[1:]).all()) and int(c[0]) == int(counts.max())
    assert summary["corpus_tokens"] == int(counts.sum())


def test_cpm_spec_freq_bad_input_is_one_line(tmp_path, capsys):
    from tui.cli import main

    assert main(["spec", "freq", "--corpus", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err
