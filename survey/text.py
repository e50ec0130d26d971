"""Small text helpers shared by the survey modules: whitespace cleanup, sentences, content words."""
from __future__ import annotations

import re

_WS = re.compile(r"\s+")
_WORD = re.compile(r"[a-z][a-z0-9\-]+")
# Sentence ends: ., ! or ? followed by space, or a citation group closing a sentence.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d]))\s+(?=[A-Z0-9\[(\"'\u201c])")
STOPWORDS = frozenset("""
a an and are as at be been being but by can could did do does for from had has have how in into is it its
may might more most of on or our such than that the their them then there these they this those to was we
were what when where which while who will with would also both each other some any all not no use used using
based via paper papers work works study studies approach approaches method methods propose proposed present
show shows new recent large model models this section survey research results well however further many
""".split())


def clean(text: str) -> str:
    """Collapse the line breaks and runs of spaces that arXiv abstracts keep."""
    return _WS.sub(" ", text or "").strip()


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(clean(text)) if s.strip()]


def content_words(text: str) -> set[str]:
    """Lower-cased words of 4+ letters minus stopwords, with a plural 's' stripped (a crude stem)."""
    words = set()
    for w in _WORD.findall(text.lower()):
        if len(w) < 4 or w in STOPWORDS:
            continue
        words.add(w[:-1] if w.endswith("s") and not w.endswith("ss") else w)
    return words


def truncate_words(text: str, limit: int) -> str:
    words = clean(text).split(" ")
    return text if len(words) <= limit else " ".join(words[:limit]) + " ..."
