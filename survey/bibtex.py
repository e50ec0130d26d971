"""BibTeX for the cited papers: one @misc entry per document, keys like `shimadzu2025retrieval`."""
from __future__ import annotations

import re

from text_unidecode import unidecode

from survey.sources import Source
from survey.text import content_words

_SPECIAL = {"&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_"}


def _escape(value: str) -> str:
    # Braces must balance inside a BibTeX field; arXiv titles carry stray LaTeX, so drop braces entirely.
    value = value.replace("{", "").replace("}", "").replace("\\", "")
    return "".join(_SPECIAL.get(c, c) for c in value)


def _key(src: Source, used: set[str]) -> str:
    # Keys are ASCII: accented and non-Latin letters are transliterated (Vázquez -> vazquez), not dropped.
    surname = re.sub(r"[^a-z]", "", unidecode(src.first_author_surname).lower()) or "anon"
    first = next((w for w in re.findall(r"[a-z]+", unidecode(src.title).lower()) if w in content_words(w)), "paper")
    base = f"{surname}{src.year or ''}{first}"
    key, i = base, 1
    while key in used:
        i += 1
        key = f"{base}{chr(ord('a') + i - 2)}" if i <= 27 else f"{base}{i}"
    used.add(key)
    return key


def bibtex_entry(src: Source, key: str) -> str:
    fields = {"title": "{" + _escape(src.title) + "}",
              "author": " and ".join(_escape(a.strip()) for a in src.authors.split(",") if a.strip()) or "Unknown"}
    if src.year:
        fields["year"] = str(src.year)
    if src.arxiv_id:
        fields.update(eprint=src.arxiv_id, archiveprefix="arXiv", url=f"https://arxiv.org/abs/{src.arxiv_id}")
    elif src.url:
        fields["url"] = src.url
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items())
    return f"@misc{{{key},\n{body}\n}}"


def bibtex_keys(sources: list[Source]) -> list[str]:
    """The citation key of each source, unique within the list (LaTeX export cites with these)."""
    used: set[str] = set()
    return [_key(s, used) for s in sources]


def render_bibtex(sources: list[Source]) -> str:
    """Entries in the order given (the References order)."""
    return "\n\n".join(bibtex_entry(s, k) for s, k in zip(sources, bibtex_keys(sources))) + "\n"
