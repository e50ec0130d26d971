"""`cpm index build|add|info|search|fetch-arxiv` end to end (in-process, real model), and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

import pytest

from tui.cli import main as cpm


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cpm(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def write_jsonl(path: Path, docs) -> Path:
    path.write_text("".join(json.dumps({"id": d.id, "title": d.title, "abstract": d.text, "authors": d.authors,
                                        "categories": d.categories}) + "\n" for d in docs))
    return path


def test_retrieval_cli_build_info_search_add(capsys, corpus_docs, minilm_path, tmp_path, make_pdf):
    papers = write_jsonl(tmp_path / "papers.jsonl", corpus_docs[100:112])
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "kv.md").write_text("# Paged KV cache notes\n\nBlocks of the key-value cache are paged like virtual memory.\n")
    (notes / "spec.pdf").write_bytes(make_pdf(["Draft tokens are verified by the target model."],
                                              title="Speculative decoding notes"))
    index = tmp_path / "idx"
    code, out, err = run(capsys, "index", "build", str(papers), str(notes), "--index", str(index), "--quiet",
                         "--max-seq-length", "64")
    assert code == 0, err
    assert out.startswith("indexed 14 documents") and "flat-ip" in out

    code, out, _ = run(capsys, "index", "info", str(index), "--json")
    info = json.loads(out)
    assert code == 0 and info["counts"]["documents"] == 14 and info["embedder"]["name"] == "minilm"
    assert info["embedder"]["max_seq_length"] == 64 and info["faiss"]["params"]["type"] == "flat-ip"
    code, out, _ = run(capsys, "index", "info", str(index))
    assert code == 0 and "documents  14" in out and "minilm (384-d" in out

    target = corpus_docs[105]
    code, out, _ = run(capsys, "index", "search", "--index", str(index), "-k", "3", "--json", target.title)
    hits = json.loads(out)
    assert code == 0 and len(hits) == 3 and hits[0]["id"] == target.id
    assert {"id", "title", "score", "text", "chunk_id", "authors", "year", "url"} <= set(hits[0])
    code, out, _ = run(capsys, "index", "search", "--index", str(index), "--hybrid", "paged", "key-value", "cache")
    assert code == 0 and out.startswith(" 1. [") and "Paged KV cache notes" in out.splitlines()[0]

    more = write_jsonl(tmp_path / "more.jsonl", corpus_docs[110:114])
    code, out, err = run(capsys, "index", "add", str(more), "--index", str(index), "--quiet")
    assert code == 0, err
    assert out.startswith("added 2 documents") and "2 already present" in out and "16 documents" in out

    code, _, err = run(capsys, "index", "add", str(more), "--index", str(index), "--embedder", "/other/model")
    assert "built with embedder 'minilm'" in one_line_error(code, err)
    code, _, err = run(capsys, "index", "build", str(more), "--index", str(index))
    assert "already holds an index" in one_line_error(code, err)


def test_retrieval_cli_user_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "index", "search", "--index", str(tmp_path / "none"), "q")
    assert "does not exist" in one_line_error(code, err)
    code, _, err = run(capsys, "index", "info", str(tmp_path))
    assert "not an index" in one_line_error(code, err)
    (tmp_path / "a.jsonl").write_text('{"title": "t", "abstract": "a"}\n')
    code, _, err = run(capsys, "index", "build", str(tmp_path / "a.jsonl"), "--index", str(tmp_path / "i"),
                       "--fields", "titel=name")
    assert "--fields" in one_line_error(code, err)
    code, _, err = run(capsys, "index", "build", str(tmp_path / "missing.jsonl"), "--index", str(tmp_path / "i"))
    assert "does not exist" in one_line_error(code, err)
    assert not (tmp_path / "i").exists()


def test_retrieval_import_is_light():
    code = ("import sys, retrieval; from retrieval import Index, Hit, Document; "
            "assert not {'faiss', 'torch', 'sentence_transformers'} & set(sys.modules), sorted(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# ---- fetch-arxiv against a local server that answers in the arXiv API's Atom format ----

def atom_feed(docs, start: int, total: int) -> str:
    entries = "".join(f"""
  <entry>
    <id>http://arxiv.org/abs/{d.id}v1</id>
    <updated>2025-03-19T17:59:59Z</updated>
    <published>2025-03-18T17:59:59Z</published>
    <title>{escape(d.title)}</title>
    <summary>  {escape(d.text)}
</summary>
    {"".join(f"<author><name>{escape(a.strip())}</name></author>" for a in d.authors.split(","))}
    <arxiv:comment xmlns:arxiv="http://arxiv.org/schemas/atom">12 pages</arxiv:comment>
    <link href="http://arxiv.org/abs/{d.id}v1" rel="alternate" type="text/html"/>
    <link title="pdf" href="http://arxiv.org/pdf/{d.id}v1" rel="related" type="application/pdf"/>
    <arxiv:primary_category xmlns:arxiv="http://arxiv.org/schemas/atom" term="{d.categories.split()[-1]}" scheme="http://arxiv.org/schemas/atom"/>
    {"".join(f'<category term="{c}" scheme="http://arxiv.org/schemas/atom"/>' for c in d.categories.split())}
  </entry>""" for d in docs)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <link href="http://arxiv.org/api/query?search_query%3Dall%3Allm%26id_list%3D%26start%3D{start}" rel="self" type="application/atom+xml"/>
  <title type="html">ArXiv Query: search_query=all:llm&amp;id_list=&amp;start={start}&amp;max_results=2</title>
  <id>http://arxiv.org/api/cHxbiOdZaP56ODnBPIenZhzg5f8</id>
  <updated>2025-03-20T00:00:00-04:00</updated>
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{total}</opensearch:totalResults>
  <opensearch:startIndex xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{start}</opensearch:startIndex>
  <opensearch:itemsPerPage xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">2</opensearch:itemsPerPage>{entries}
</feed>
"""


ERROR_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <entry>
    <id>http://arxiv.org/api/errors#incorrect_id_format_for_1234</id>
    <title>Error</title>
    <summary>incorrect id format for 1234</summary>
  </entry>
</feed>
"""


@pytest.fixture
def arxiv_server(corpus_docs):
    """A 127.0.0.1 server holding 5 papers; the first request gets a 503 (arXiv does that under load)."""
    docs = [d for d in corpus_docs[:40] if "/" not in d.id][:5]
    seen: list[tuple[float, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            seen.append((time.monotonic(), q))
            if len(seen) == 1:
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.end_headers()
                return
            if q.get("search_query") == "id:1234":
                body = ERROR_FEED
            else:
                start, n = int(q["start"]), int(q["max_results"])
                body = atom_feed(docs[start:start + n], start, len(docs))
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/query", docs, seen
    server.shutdown()
    server.server_close()


def test_retrieval_fetch_arxiv_pages_politely(capsys, arxiv_server, tmp_path, monkeypatch):
    import retrieval.arxiv_api as api

    url, docs, seen = arxiv_server
    monkeypatch.setattr(api, "PAGE_SIZE", 2)  # three pages for five papers
    out = tmp_path / "fetched.jsonl"
    code, stdout, err = run(capsys, "index", "fetch-arxiv", "all:llm", "--max", "10", "--out", str(out),
                            "--base-url", url, "--delay", "0.2")
    assert code == 0, err
    assert stdout.startswith("wrote 5 records")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [d.id for d in docs]
    first = records[0]
    assert first["title"] == docs[0].title and first["abstract"] == docs[0].text
    assert first["authors"] == docs[0].authors and set(first["categories"].split()) == set(docs[0].categories.split())
    assert first["categories"].split()[0] == docs[0].categories.split()[-1]  # primary category first
    assert [q["start"] for _, q in seen] == ["0", "0", "2", "4"]  # the 503 retried, then pages
    assert all(q["search_query"] == "all:llm" for _, q in seen)
    gaps = [b[0] - a[0] for a, b in zip(seen[1:], seen[2:])]
    assert min(gaps) >= 0.19  # the polite delay between requests

    # What it wrote is a valid input for the index: ids and years come out as for the Kaggle dump.
    from retrieval.ingest import read_documents

    assert [(d.id, d.year) for d in read_documents([out])] == [(d.id, d.year) for d in docs]

    code, _, err = run(capsys, "index", "fetch-arxiv", "all:llm", "--out", str(out), "--base-url", url)
    assert "exists" in one_line_error(code, err)


def test_retrieval_fetch_arxiv_api_error_and_max(capsys, arxiv_server, tmp_path):
    url, docs, seen = arxiv_server
    out = tmp_path / "x.jsonl"
    code, _, err = run(capsys, "index", "fetch-arxiv", "id:1234", "--out", str(out), "--base-url", url,
                       "--delay", "0")
    retry_note, error = err.strip().splitlines()  # progress notes go to stderr too; the error is one line
    assert "HTTP 503; retrying" in retry_note
    assert "rejected the query: incorrect id format" in one_line_error(code, error)
    assert not out.exists()
    code, stdout, _ = run(capsys, "index", "fetch-arxiv", "all:llm", "--max", "3", "--out", str(out),
                          "--base-url", url, "--delay", "0")
    assert code == 0 and len(out.read_text().splitlines()) == 3
    code, _, err = run(capsys, "index", "fetch-arxiv", "all:llm", "--out", str(tmp_path / "y.jsonl"),
                       "--base-url", "http://127.0.0.1:9/api/query", "--delay", "0")
    assert "cannot reach" in one_line_error(code, err.strip().splitlines()[-1])
    assert len(err.strip().splitlines()) == 3  # two retries announced, then the error
