"""Ingest: arXiv/Kaggle JSONL mapping, --fields, Markdown/text folders, PDFs, normalisation, chunking, filters."""
from __future__ import annotations

import gzip
import json

import pytest

from retrieval.chunking import chunk_text
from retrieval.config import ChunkConfig
from retrieval.errors import RetrievalError
from retrieval.ids import arxiv_id, content_id
from retrieval.ingest import IngestFilter, read_documents
from retrieval.ingest_jsonl import InputFormatError, parse_fields
from retrieval.normalize import normalize_text

KAGGLE = {  # one record as in arxiv-metadata-oai-snapshot.json
    "id": "0704.0001", "submitter": "Pavel Nadolsky",
    "authors": "C. Bal\\'azs, E. L. Berger, P. M. Nadolsky, C.-P. Yuan",
    "title": "Calculation of prompt diphoton production cross sections at Tevatron and\n  LHC energies",
    "comments": "37 pages", "journal-ref": "Phys.Rev.D76:013009,2007", "doi": "10.1103/PhysRevD.76.013009",
    "report-no": "ANL-HEP-PR-07-12", "categories": "hep-ph", "license": None,
    "abstract": "  A fully differential calculation in perturbative quantum chromodynamics is\npresented for the "
                "production of massive photon pairs at hadron colliders. All\nnext-to-leading order $\\alpha_s$ "
                "corrections are \\emph{included}.\n",
    "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}],
    "update_date": "2008-11-13",
    "authors_parsed": [["Balázs", "C.", ""], ["Berger", "E. L.", ""]],
}


def write_jsonl(path, records, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def test_retrieval_shared_corpus_maps_arxiv_fields(corpus_path):
    docs = list(read_documents([corpus_path]))
    assert len(docs) == 3000 and len({d.id for d in docs}) == 3000
    first = docs[0]
    assert first.id == "2503.14620" and first.year == 2025
    assert first.url == "https://arxiv.org/abs/2503.14620"
    assert first.authors.startswith("Hikaru Shimadzu, ") and first.categories == "cs.CL cs.SI"
    assert "\n" not in first.text and "  " not in first.text


def test_retrieval_kaggle_dump_layout(tmp_path):
    old = {**KAGGLE, "id": "hep-th/9901001", "title": "Old style id", "versions": []}
    path = write_jsonl(tmp_path / "arxiv-metadata-oai-snapshot.json", [KAGGLE, old])
    a, b = read_documents([path])
    assert a.id == "0704.0001" and a.year == 2007  # from the id, not update_date (2008)
    assert a.title == "Calculation of prompt diphoton production cross sections at Tevatron and LHC energies"
    assert a.text.endswith("All next-to-leading order α_s corrections are included.")
    assert a.authors == "C. Balázs, E. L. Berger, P. M. Nadolsky, C.-P. Yuan"
    assert b.id == "hep-th/9901001" and b.year == 1999 and b.url == "https://arxiv.org/abs/hep-th/9901001"


def test_retrieval_gzip_and_json_array(tmp_path):
    gz = write_jsonl(tmp_path / "papers.jsonl.gz", [KAGGLE], gz=True)
    arr = tmp_path / "papers.json"
    arr.write_text(json.dumps([{**KAGGLE, "id": "0704.0002"}]))
    assert [d.id for d in read_documents([gz, arr])] == ["0704.0001", "0704.0002"]


def test_retrieval_fields_mapping(tmp_path):
    rec = {"paper_id": "doi:10/xyz", "name": "Speculative  Decoding Notes.", "body": "Draft then verify.",
           "writers": ["A. Smith", "B. Jones"], "pub_year": 2021, "tags": ["cs.CL", "cs.LG"]}
    path = write_jsonl(tmp_path / "mine.jsonl", [rec])
    fields = parse_fields("id=paper_id,title=name,abstract=body,authors=writers,year=pub_year,categories=tags")
    (doc,) = read_documents([path], fields)
    assert (doc.id, doc.title, doc.text) == ("doi:10/xyz", "Speculative Decoding Notes", "Draft then verify.")
    assert (doc.authors, doc.year, doc.categories, doc.url) == ("A. Smith, B. Jones", 2021, "cs.CL cs.LG", None)


def test_retrieval_record_without_id_gets_stable_content_id(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"title": "T", "text": "Body text."}])
    (doc,) = read_documents([path])
    assert doc.id == content_id("T", "Body text.") == next(iter(read_documents([path]))).id
    assert doc.id.startswith("sha1:")


@pytest.mark.parametrize("spec", ["title", "nope=x", "title="])
def test_retrieval_bad_fields_spec(spec):
    with pytest.raises(RetrievalError, match="--fields"):
        parse_fields(spec)


def test_retrieval_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(KAGGLE) + "\n{not json\n")
    with pytest.raises(InputFormatError, match=r"bad.jsonl:2"):
        list(read_documents([path]))


def test_retrieval_missing_and_unknown_inputs(tmp_path):
    with pytest.raises(RetrievalError, match="does not exist"):
        list(read_documents([tmp_path / "nope.jsonl"]))
    (tmp_path / "x.docx").write_bytes(b"x")
    with pytest.raises(RetrievalError, match="unknown input type"):
        list(read_documents([tmp_path / "x.docx"]))


def test_retrieval_filters(corpus_path):
    cl = list(read_documents([corpus_path], filt=IngestFilter(categories=("cs.IR",))))
    assert cl and all("cs.IR" in d.categories.split() for d in cl)
    cs = list(read_documents([corpus_path], filt=IngestFilter(categories=("cs",), year_min=2026, limit=50)))
    assert len(cs) == 50 and all(d.year == 2026 for d in cs)
    y25 = list(read_documents([corpus_path], filt=IngestFilter(year_max=2025)))
    assert y25 and all(d.year == 2025 for d in y25)


def test_retrieval_markdown_text_folder(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# KV cache  compression\n\nWe quantise the\nkey-value cache.\n")
    (folder / "sub" / "b.txt").write_text("Plain notes on RAG\nretrieval then generation\n")
    (folder / "ignore.bin").write_bytes(b"\x00\x01")
    docs = {d.title: d for d in read_documents([folder])}
    assert set(docs) == {"KV cache compression", "Plain notes on RAG"}
    md = docs["KV cache compression"]
    assert md.text == "# KV cache compression We quantise the key-value cache."
    assert md.url.startswith("file://") and md.id == next(iter(read_documents([folder / "a.md"]))).id


def test_retrieval_pdf_text_and_title(tmp_path, make_pdf):
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(make_pdf(["Block sparse attention for long context.", "It skips (most) key blocks."],
                             title="Sparse Attention Notes"))
    (doc,) = read_documents([pdf])
    assert doc.title == "Sparse Attention Notes"
    assert "Block sparse attention for long context." in doc.text and "(most)" in doc.text


def test_retrieval_broken_pdf_is_a_clear_error(tmp_path):
    pdf = tmp_path / "broken.pdf"
    pdf.write_bytes(b"%PDF-1.4\nthis is not a pdf body")
    with pytest.raises(RetrievalError, match="broken.pdf"):
        list(read_documents([pdf]))


def test_retrieval_normalize_latex_and_whitespace():
    raw = "We get a\n  $3\\times$ speed-up (\\pm2\\%) with \\textbf{\\emph{FR-Spec}}~\\cite{x} and ``quotes''."
    assert normalize_text(raw) == 'We get a 3× speed-up (±2%) with FR-Spec and "quotes".'


def test_retrieval_chunking_overlaps_and_covers():
    words = [f"w{i}" for i in range(500)]
    chunks = chunk_text(" ".join(words), ChunkConfig(words=200, overlap=40))
    assert [c.split()[0] for c in chunks] == ["w0", "w160", "w320"]
    assert chunks[-1].split()[-1] == "w499"
    assert chunks[0].split()[-40:] == chunks[1].split()[:40]
    assert chunk_text("short text", ChunkConfig()) == ["short text"]
    with pytest.raises(RetrievalError):
        ChunkConfig(words=100, overlap=100)


@pytest.mark.parametrize("raw,want", [("2503.14620v2", "2503.14620"), ("arXiv:2503.14620", "2503.14620"),
                                      ("http://arxiv.org/abs/2503.14620v1", "2503.14620"),
                                      ("https://arxiv.org/pdf/2503.14620v3.pdf", "2503.14620"),
                                      ("hep-th/9901001v2", "hep-th/9901001"), ("doi:10/1", None)])
def test_retrieval_arxiv_id_forms(raw, want):
    assert arxiv_id(raw) == want
