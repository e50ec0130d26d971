"""`cpm index fetch-arxiv`: records from the arXiv API (Atom feed) into JSONL in the Kaggle dump's layout.

Polite by default: one request at a time, `delay` seconds apart (arXiv asks for 3 s), a few retries on
429/5xx honouring Retry-After. The output file is written to a temp name and renamed, never overwritten.
"""
from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from retrieval.errors import RetrievalError
from retrieval.ids import arxiv_id

DEFAULT_URL = "http://export.arxiv.org/api/query"
PAGE_SIZE = 100
_NS = {"atom": "http://www.w3.org/2005/Atom", "arxiv": "http://arxiv.org/schemas/atom",
       "os": "http://a9.com/-/spec/opensearch/1.1/"}


class ArxivAPIError(RetrievalError):
    """The arXiv API could not be reached or answered with an error."""


def parse_feed(xml_text: str) -> tuple[list[dict], int | None]:
    """Atom feed -> (records in the Kaggle layout, opensearch totalResults or None)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ArxivAPIError(f"arXiv API answered with something that is not Atom XML ({exc})") from None
    total_el = root.find("os:totalResults", _NS)
    total = int(total_el.text) if total_el is not None and (total_el.text or "").strip().isdigit() else None
    records = []
    for entry in root.findall("atom:entry", _NS):
        raw_id = _text(entry, "atom:id")
        if "/api/errors" in raw_id:  # arXiv reports a bad query as a single "Error" entry
            raise ArxivAPIError(f"arXiv API rejected the query: {_text(entry, 'atom:summary')}")
        aid = arxiv_id(raw_id)
        if aid is None:
            continue
        cats = [c.get("term", "") for c in entry.findall("atom:category", _NS)]
        primary = entry.find("arxiv:primary_category", _NS)
        if primary is not None and primary.get("term") in cats:  # the primary one first, as in the dump
            cats.remove(primary.get("term"))
            cats.insert(0, primary.get("term"))
        records.append({
            "id": aid,
            "title": _text(entry, "atom:title"),
            "authors": ", ".join(_text(a, "atom:name") for a in entry.findall("atom:author", _NS)),
            "categories": " ".join(c for c in cats if c),
            "abstract": _text(entry, "atom:summary"),
            "update_date": _text(entry, "atom:updated")[:10],
            "published": _text(entry, "atom:published")[:10],
            "url": f"https://arxiv.org/abs/{aid}",
        })
    return records, total


def _text(el, path: str) -> str:
    found = el.find(path, _NS)
    return " ".join((found.text or "").split()) if found is not None else ""


def fetch(query: str, max_results: int, base_url: str = DEFAULT_URL, delay: float = 3.0,
          client=None, log: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Up to `max_results` records for an arXiv API `search_query`, paged, `delay` seconds between requests."""
    import httpx

    if max_results < 1:
        raise RetrievalError(f"--max must be at least 1, not {max_results}")
    own = client is None
    client = client or httpx.Client(timeout=30.0, headers={"User-Agent": "cpm-suite (fetch-arxiv)"})
    records: list[dict] = []
    seen: set[str] = set()
    last = 0.0
    try:
        while len(records) < max_results:
            n = min(PAGE_SIZE, max_results - len(records))
            params = {"search_query": query, "start": len(records), "max_results": n}
            wait = last + delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            text = _get(client, base_url, params, delay, log)
            last = time.monotonic()
            page, total = parse_feed(text)
            new = [r for r in page if r["id"] not in seen]
            seen.update(r["id"] for r in new)
            records.extend(new)
            log(f"fetched {len(records)}" + (f" of {total}" if total is not None else ""))
            # arXiv sometimes returns short pages mid-way; trust totalResults when it is there.
            if not new or (total is not None and len(records) >= total) or (total is None and len(page) < n):
                break
    finally:
        if own:
            client.close()
    return records[:max_results]


def _get(client, url: str, params: dict, delay: float, log, attempts: int = 3) -> str:
    import httpx

    for attempt in range(1, attempts + 1):
        try:
            resp = client.get(url, params=params)
        except httpx.HTTPError as exc:
            problem = f"cannot reach {url}: {exc}"
        else:
            if resp.status_code == 200:
                return resp.text
            problem = f"{url} answered HTTP {resp.status_code}"
            if resp.status_code not in (429, 500, 502, 503, 504):
                break
            retry_after = resp.headers.get("Retry-After", "")
            if retry_after.isdigit():
                delay = max(delay, float(retry_after))
        if attempt < attempts:
            log(f"{problem}; retrying in {delay * attempt:.0f}s")
            time.sleep(delay * attempt)
    raise ArxivAPIError(f"{problem}; check the network or try later")


def fetch_to_jsonl(query: str, out: Path, max_results: int, base_url: str = DEFAULT_URL, delay: float = 3.0,
                   log: Callable[[str], None] = lambda _: None) -> int:
    """Fetch and write records as JSON lines to `out` (which must not exist); returns how many."""
    out = Path(out)
    if out.exists():
        raise RetrievalError(f"{out} exists; choose another --out (nothing is overwritten)")
    if not out.parent.is_dir():
        raise RetrievalError(f"folder {out.parent} does not exist")
    records = fetch(query, max_results, base_url, delay, log=log)
    if not records:
        raise RetrievalError(f"the arXiv API found nothing for {query!r}; try a broader query (e.g. 'all:term')")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return len(records)
