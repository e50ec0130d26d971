"""Measures of a survey's prose that a reader notices: loops, copied sentences, template holes, title headings.

The writer's post-check (`survey.postcheck`) and `cpm bench survey_quality` use the same definitions, so what the
benchmark counts is what the writer guards against:
- a *repeated sentence* says again what an earlier sentence said (same words, citations aside, or 80% of its
  content words in one earlier sentence);
- the *repeated-4-gram rate* is the share of the text's word 4-grams that already occurred earlier in it;
- a sentence is *copied verbatim* when its longest common substring with a source is over 0.8 of its length;
- an *unfilled template* is a slot left empty ("contributes to the field of by", "()", "{topic}");
- a *title heading* is a heading equal to a paper's title, or to its first words (a title cut short).
"""
from __future__ import annotations

import re
from difflib import SequenceMatcher

from survey.text import clean, content_words

_CITE = re.compile(r"\s*\[(?:@[^\]\s]+|\d+(?:\s*[-\u2013,;]\s*\d+)*)\]")
_WORDS = re.compile(r"[a-z0-9]+(?:[.\-][a-z0-9]+)*")
# Two function words in a row where a noun phrase belongs between them ("of by", "the of", "to ."), an empty
# bracket, or a placeholder in braces / angle brackets / capitals.
_HOLE = re.compile(r"\b(?:of|to|for|in|on|by|with|from|the|a|an)(?:\s+(?:of|by|for|with|from)\b(?=\s)|\s*[.,;:](?!\d))|"
                   r"\(\s*\)|\[\s*\]|\{[^{}]*\}|<[a-z_ ]+>", re.I)
_PLACEHOLDER = re.compile(r"\b(?:TOPIC|TITLE|HEADING|PAPER|X+|Y|Z)\b(?![-.]\w)")
VERBATIM_SHARE = 0.8
NEAR_REPEAT = 0.8  # a sentence whose content words were 80% said by one earlier sentence repeats it


def strip_citations(sentence: str) -> str:
    return clean(_CITE.sub("", sentence))


def normalized(text: str) -> str:
    """Lower-case words joined by single spaces: the form the copy and repeat checks compare."""
    return " ".join(_WORDS.findall(strip_citations(text).lower()))


def words(text: str) -> list[str]:
    return _WORDS.findall(strip_citations(text).lower())


def longest_copy(sentence: str, source: str) -> float:
    """Longest common substring of `sentence` and `source` (normalized), as a share of the sentence."""
    a, b = normalized(sentence), normalized(source)
    if not a or not b:
        return 0.0
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size / len(a)


def is_verbatim(sentence: str, sources: list[str]) -> bool:
    return any(longest_copy(sentence, s) > VERBATIM_SHARE for s in sources)


def has_hole(sentence: str) -> bool:
    """An unfilled template slot: 'contributes to the field of by', '()', '{topic}'."""
    text = strip_citations(sentence)
    return bool(_HOLE.search(text) or _PLACEHOLDER.search(text))


def ngrams(tokens: list[str], n: int = 4) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_rate(texts: list[str], n: int = 4) -> float:
    """Share of the word n-grams of `texts` (read in order) that occurred before; 0 for a text without any."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def has_inner_repeat(sentence: str, n: int = 4) -> bool:
    """A sentence that says one 4-gram twice is looping ("... the model, the model, the model ...")."""
    grams = ngrams(words(sentence), n)
    return len(grams) != len(set(grams))


def repeats(sentence: str, earlier: list[str]) -> bool:
    """Does `sentence` say nothing new: the same normalized words, or (nearly) all its content words said by one
    earlier sentence."""
    mine, key = content_words(strip_citations(sentence)), normalized(sentence)
    for prev in earlier:
        if key == normalized(prev):
            return True
        theirs = content_words(strip_citations(prev))
        if mine and (mine <= theirs or (len(mine) >= 5 and len(mine & theirs) >= NEAR_REPEAT * len(mine))):
            return True
    return False


def _title_key(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def is_title_heading(heading: str, titles: list[str], min_words: int = 4) -> bool:
    """The heading is a paper's title, or the first `min_words`+ words of one (a title cut short)."""
    head = _title_key(heading)
    if not head:
        return False
    for title in titles:
        words_ = _title_key(title)
        if head == words_ or (len(head) >= min_words and words_[:len(head)] == head):
            return True
        # "Name: subtitle" titles: the subtitle alone is the title too
        _, colon, rest = title.partition(":")
        if colon and head == _title_key(rest):
            return True
    return False
