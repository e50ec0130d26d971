"""Introduction and conclusion that synthesise the sections instead of listing them.

The introduction states the problem in the words of the most topical abstracts (cited), how the retrieved
work divides into the sections' topics, and what the groups share (phrases found in the papers of several
groups). The conclusion says where the groups differ (each group's own keyphrases) and which open problems
the cited abstracts name themselves (sentences with "remain", "challenge", "limited", ..., cited). Every
sentence about a paper is grounded as in `survey.grounding`; the framing sentences cite nothing.
"""
from __future__ import annotations

import re
from collections import Counter

from survey.grounding import (lower_start, third_person, tidy, windows, abstract_sentences, cut_clause, fits,
                              shorter_forms)
from survey.outline import SectionPlan
from survey.sources import Source
from survey.text import content_words
from survey.topics import _GENERIC, _phrases

_BACKGROUND = re.compile(r"\b(?:challenge|bottleneck|costly|expensive|limited|constrain|demand|latency|memory|"
                         r"deploy|resource|important|critical|growing|increasing|hinder|prohibitive)", re.I)
_OPEN = re.compile(r"\b(?:remain|remains|open (?:problem|question|challenge)|future|limitation|still|unclear|"
                   r"unexplored|underexplored|lack|challenging|challenge)", re.I)


def _prose(sentence: str) -> str:
    text = third_person(tidy(sentence))
    return text[:1].upper() + text[1:]


def _grounded_from(sents: list[str], i: int, source: Source) -> str | None:
    """Sentence `i` of `source` as survey prose (tidied, third person): alone, shortened, or joined with the next
    sentence of the same passage when alone it would be a copy of the abstract, or attributed ("X et al. note
    that ...") when it is long enough to carry the attribution."""
    text = _prose(sents[i])
    forms = [text, *shorter_forms(text)]
    window = windows(sents)
    if i + 1 < len(sents) and window[i] == window[i + 1]:
        forms.append(f"{cut_clause(text)}; {cut_clause(lower_start(_prose(sents[i + 1]), source.text))}")
    # whose claim it is, on a long sentence only: on a short one the four added words outweigh its own
    forms += [f"{source.first_author_surname} et al. note that {lower_start(f, source.text)}"
              for f in [text, *shorter_forms(text)] if len(f.split()) >= 18]
    for candidate in forms:
        if fits(candidate, source.text):
            return candidate
    return None


def _said(text: str, said: list[str]) -> bool:
    """Half of the sentence's content words in one sentence the sections already have: not news here."""
    mine = content_words(text)
    return any(len(mine & content_words(prev)) >= 0.5 * len(mine) for prev in said)


def _pick(sources: list[Source], cue: re.Pattern, topic_words: set[str], most: int, used: set[str],
          first_only: bool = False, said: list[str] = ()) -> list[tuple[str, str]]:
    """Up to `most` (sentence, doc id) pairs, one per paper, from sentences matching `cue` that the sections
    have not said already."""
    out = []
    for src in sources:
        if src.id in used:
            continue
        sents = abstract_sentences(src)
        order = [i for i in range(len(sents[:2] if first_only else sents)) if cue.search(sents[i])]
        for i in sorted(order, key=lambda i: -len(content_words(sents[i]) & topic_words)):
            text = _grounded_from(sents, i, src)
            if text and not _said(text, said):
                out.append((text, src.id))
                used.add(src.id)
                break
        if len(out) == most:
            break
    return out


def shared_phrases(groups: list[list[Source]], topic: str, most: int = 3) -> list[str]:
    """Phrases that occur in papers of at least half the groups (and more than one group), most papers first."""
    in_groups: Counter[str] = Counter()
    papers: Counter[str] = Counter()
    for group in groups:
        seen: set[str] = set()
        for src in group:
            phrases = {p for p in _phrases(f"{src.title}. {src.text}") if len(p.split()) <= 2}
            papers.update(phrases)
            seen |= phrases
        in_groups.update(seen)
    topic_words = content_words(topic)
    need = max(2, (len(groups) + 1) // 2)
    ranked = sorted((p for p, n in in_groups.items() if n >= need), key=lambda p: (-papers[p], p))
    out: list[str] = []
    for phrase in ranked:
        words = set(phrase.split())
        words = {w.rstrip("s") for w in phrase.replace("-", " ").split()}  # "token" and "tokens" are one
        if words & _GENERIC or content_words(phrase) <= topic_words or any(
                words & {w.rstrip("s") for w in o.replace("-", " ").split()} for o in out):
            continue
        out.append(phrase)
        if len(out) == most:
            break
    return out


def _series(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def introduction(topic: str, sections: list[SectionPlan], groups: list[list[Source]],
                 top_sources: list[Source]) -> list[tuple[str, list[str]]]:
    """Sentences of the introduction, each with the ids it cites."""
    topic_words = content_words(topic)
    out: list[tuple[str, list[str]]] = [
        (text, [doc]) for text, doc in _pick(top_sources, _BACKGROUND, topic_words, 2, set(), first_only=True)]
    headings = [s.title for s in sections]
    n_papers = sum(len(g) for g in groups)
    shared = shared_phrases(groups, topic)
    common = f"; {_series(shared)} run through several of them" if shared else ""
    out.append((f"The {n_papers} papers this survey draws on fall into {len(sections)} groups by topic, "
                f"{_series(headings)}{common}", []))
    return out


def conclusion(topic: str, sections: list[SectionPlan], cited: list[list[Source]],
               said: list[str] = ()) -> list[tuple[str, list[str]]]:
    """Sentences of the conclusion: where the groups differ, then open problems named in the cited abstracts
    (none the sections' sentences, `said`, already state)."""
    focus = []
    for sec in sections:  # each group's own phrases beyond its heading: what sets it apart
        heading = set(sec.title.lower().replace("-", " ").split())
        own = [p for p in sec.keyphrases if not set(p.replace("-", " ").split()) & heading and " " in p][:1]
        if own and len(focus) < 3:
            focus.append(f"{sec.title} on {own[0]}")
    out: list[tuple[str, list[str]]] = []
    if len(focus) >= 2:
        out.append((f"The groups differ in focus, {'; '.join(focus)}", []))
    topic_words = content_words(topic)
    used: set[str] = set()
    problems = []
    for group in cited:  # one open problem per section at most, two in all
        problems += _pick(group, _OPEN, topic_words, 1, used, said=said)
        if len(problems) == 2:
            break
    return out + [(text, [doc]) for text, doc in problems]
