"""Stable document ids: the arXiv id when there is one, else a hash of the content."""
from __future__ import annotations

import hashlib
import re

# New style (2503.14620, optional version) and old style (hep-th/9901001).
_ARXIV_NEW = re.compile(r"^(\d{4}\.\d{4,5})(v\d+)?$")
_ARXIV_OLD = re.compile(r"^([a-z\-]+(?:\.[A-Z]{2})?/\d{7})(v\d+)?$")


def arxiv_id(raw: str) -> str | None:
    """The version-less arXiv id in `raw` (a bare id, `arXiv:` id or abs/pdf URL), or None if it is not one."""
    s = raw.strip()
    for prefix in ("http://", "https://"):
        if s.startswith(prefix):
            s = s.split("/abs/", 1)[-1] if "/abs/" in s else s.split("/pdf/", 1)[-1]
            s = s.removesuffix(".pdf")
    s = s.removeprefix("arXiv:").removeprefix("arxiv:")
    for pattern in (_ARXIV_NEW, _ARXIV_OLD):
        m = pattern.match(s)
        if m:
            return m.group(1)
    return None


def arxiv_year(aid: str) -> int | None:
    """Submission year encoded in an arXiv id (2503.xxxxx -> 2025, hep-th/99xxxxx -> 1999)."""
    yy = aid.split("/")[-1][:2]
    if not yy.isdigit():
        return None
    y = int(yy)
    return 1900 + y if y >= 91 else 2000 + y  # arXiv started in 1991


def content_id(title: str, text: str) -> str:
    """A stable id for a record without one: same normalised title and text -> same id on every machine."""
    digest = hashlib.sha1(f"{title}\n{text}".encode("utf-8")).hexdigest()
    return f"sha1:{digest[:16]}"
