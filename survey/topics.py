"""Outline by topic: group the retrieved papers by their embeddings and name each group.

Groups come from k-means over the papers' embeddings (unit vectors, so Euclidean k-means is cosine k-means);
a group needs at least two papers, so singletons are set aside as outliers and the rest clustered again.
Each group is named by its keyphrases: word n-grams that occur in several of its papers and rarely in the
other groups (class-based TF-IDF, as BERTopic names topics). A model-written name is used instead only when
it passes `check_heading`: short, made of the group's own words, not a paper title, not the topic again.
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from survey.errors import SurveyError
from survey.quality import is_title_heading
from survey.sources import Source
from survey.text import STOPWORDS, content_words

_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9\-]*")
# Words that name the field rather than a topic inside it: never a heading on their own.
_GENERIC = frozenset("""large language model models llm llms lm lms language languages neural network networks deep
learning task tasks performance framework frameworks benchmark benchmarks experiment experiments result results
approach approaches method methods paper work study existing propose proposed novel new state art sota data
dataset datasets problem problems challenge challenges significant significantly different various multiple
across improve improves improved improving achieve achieves achieving show shows demonstrate including without
however while first across also further high low even thus introduce introduces present presents natural
processing overhead using based specifically enable enables key effective efficient efficiency extensive
promising solution solutions usage particularly setting settings case cases test limit limits towards beyond
leveraging leverage accelerates accelerating enhancing enhance rethinking unlocking boosting exploring revisiting
toward via make makes making""".split())
# Verbs that abstracts put between two terms: a phrase holding one is a clause, not a topic.
_VERBS = frozenset("""accelerates enables achieves improves reduces outperforms shows uses leverages proposes introduces
allows makes provides requires remains yields boosts speeds lowers maintains preserves offers""".split())
_TERM = re.compile(r"^[a-z]+-[a-z]+$")  # a hyphenated term ("long-context") names a topic on its own
_SMALL = frozenset("a an and as at by for from in of on or the to via with vs".split())


def _balanced(vectors: np.ndarray, centroids: np.ndarray, cap: int) -> np.ndarray:
    """Each paper to its nearest centroid that still has room (pairs taken most-similar first)."""
    sims = vectors @ centroids.T
    labels = np.full(len(vectors), -1)
    room = np.full(len(centroids), cap)
    for flat in np.argsort(-sims, axis=None):
        i, c = divmod(int(flat), len(centroids))
        if labels[i] < 0 and room[c] > 0:
            labels[i], room[c] = c, room[c] - 1
    return labels


def group_sources(sources: list[Source], vectors: np.ndarray, n_groups: int, min_size: int = 2,
                  seed: int = 0) -> list[list[Source]]:
    """`n_groups` groups of at least `min_size` papers, each ordered by closeness to its centre.

    Retrieved papers on one topic sit close together, so plain k-means tends to make one big group and a few
    tiny ones; here k-means places the centres and each paper then goes to the nearest centre with room
    (at most ceil(n / n_groups) papers a group), a few rounds. Groups are returned in the order of their best
    retrieval score, so the section closest to the topic comes first.
    """
    from sklearn.cluster import KMeans

    if len(sources) < n_groups * min_size:
        raise SurveyError(f"only {len(sources)} papers were retrieved for {n_groups} sections of {min_size}+ papers: "
                          "use fewer --sections, a broader topic or a bigger index")
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
    centroids = KMeans(n_clusters=n_groups, n_init=10, random_state=seed).fit(vectors).cluster_centers_
    cap = -(-len(sources) // n_groups)
    for _ in range(5):
        labels = _balanced(vectors, centroids, cap)
        centroids = np.stack([vectors[labels == c].mean(0) for c in range(n_groups)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-9)
    closeness = (vectors * centroids[labels]).sum(1)
    groups = [[i for i in np.argsort(-closeness) if labels[i] == c] for c in range(n_groups)]
    ordered = [[sources[i] for i in g] for g in groups if len(g) >= min_size]
    if len(ordered) < n_groups:
        raise SurveyError(f"the retrieved papers do not form {n_groups} groups of {min_size}+ papers; use fewer "
                          "--sections or a broader topic")
    return sorted(ordered, key=lambda g: -max(s.score for s in g))


def tfidf_vectors(texts: list[str]) -> np.ndarray:
    """Unit TF-IDF vectors of `texts`: what groups papers when the retriever offers no embedder."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts).toarray().astype(np.float32)


def _phrases(text: str, longest: int = 3) -> set[str]:
    """Word 1-3-grams of `text` that neither start nor end with a small word, nor are all generic words."""
    out = set()
    for chunk in re.split(r"[.,;:()\[\]!?\"]", text):
        toks = [t.lower() for t in _TOKEN.findall(chunk)]
        for n in range(1, longest + 1):
            for i in range(len(toks) - n + 1):
                gram = toks[i:i + n]
                if gram[0] in _SMALL or gram[-1] in _SMALL or gram[0] in STOPWORDS or (n > 1 and gram[0] in _GENERIC):
                    continue
                if gram[-1] in STOPWORDS and (n == 1 or gram[-1] not in _GENERIC):
                    continue
                if any(g in STOPWORDS and g != "of" for g in gram[1:-1]):  # "crisis in nearest": no phrase
                    continue
                if any(len(g) < 2 or g in _VERBS for g in gram):  # "x" of "2.5x"; "decoding accelerates llm"
                    continue
                if all(g in _GENERIC or g in STOPWORDS or len(g) < 3 for g in gram):
                    continue
                out.add(" ".join(gram))
    return out


def keyphrases(groups: list[list[Source]], topic: str, top: int = 6) -> list[list[str]]:
    """For each group, its phrases ranked by class TF-IDF: in how many of the group's papers a phrase occurs,
    times how rare it is across the groups; a phrase must occur in two papers of the group (or its one title)."""
    topic_words = content_words(topic)
    per_group = []
    for group in groups:
        counts: Counter[str] = Counter()
        titles: Counter[str] = Counter()
        for src in group:
            counts.update(_phrases(f"{src.title}. {src.text}"))
            titles.update(_phrases(src.title))
        per_group.append((counts, titles))
    out = []
    for counts, titles in per_group:
        in_title = set(titles)
        scored = []
        for phrase, n in counts.items():
            if n < 2 and phrase not in in_title:
                continue
            words = content_words(phrase)
            if not words or words <= topic_words:  # the topic again says nothing about the group
                continue
            groups_with = sum(1 for other, _ in per_group if other[phrase])
            idf = math.log(1 + len(per_group) / groups_with)
            length = 1.0 + 0.35 * (len(phrase.split()) - 1)
            titled = titles[phrase]
            if len(phrase.split()) == 1 and not titled and not _TERM.match(phrase):
                continue  # a lone word only in abstracts ("settings", "cases") names no topic
            # a phrase of one paper only (its title) ranks below every shared phrase; titles weigh double
            shared = 1.0 if n >= 2 else 0.1
            scored.append((shared * (n + 2 * titled) * idf * length, phrase))
        ranked = [p for _, p in sorted(scored, key=lambda t: (-t[0], t[1]))]
        out.append(_distinct(_widen(ranked, counts))[:top])
    return out


def _widen(ranked: list[str], counts: Counter[str]) -> list[str]:
    """A lone word gives way to the phrase it mostly occurs in ("edge" -> "edge devices")."""
    out = []
    for phrase in ranked:
        if " " not in phrase:
            wider = [p for p in ranked
                     if phrase in p.split() and p != phrase and counts[p] >= max(2, counts[phrase] / 2)]
            phrase = wider[0] if wider else phrase
        out.append(phrase)
    return list(dict.fromkeys(out))


def _distinct(phrases: list[str]) -> list[str]:
    """Drop phrases whose words a better phrase already holds ("cache" after "kv cache")."""
    kept: list[str] = []
    for phrase in phrases:
        words = set(phrase.split())
        if not any(words <= set(k.split()) or set(k.split()) <= words for k in kept):
            kept.append(phrase)
    return kept




def title_case(phrase: str, known: str = "") -> str:
    """'kv cache eviction' -> 'KV Cache Eviction': acronyms as the papers write them, small words lower-case."""
    out = []
    for i, word in enumerate(phrase.split()):
        spelled = re.search(rf"\b({re.escape(word)})\b", known, re.I)
        written = spelled.group(1) if spelled else word
        if sum(c.isupper() for c in written) > 1:
            out.append(written)
        elif i and word in _SMALL:
            out.append(word)
        else:
            out.append(word[:1].upper() + word[1:])
    return " ".join(out)


def keyphrase_heading(phrases: list[str], group: list[Source], taken: list[str]) -> str:
    """A heading from the group's best one or two keyphrases ('KV Cache and Sparse Attention')."""
    known = " ".join(f"{s.title} {s.text}" for s in group)
    shared = {p for p in phrases if sum(p in f"{s.title} {s.text}".lower() for s in group) >= 2}
    fresh = [p for p in phrases if not any(set(p.split()) & set(t.lower().split()) - _SMALL for t in taken)]
    pool = fresh or phrases
    if not pool:
        return title_case(" ".join(sorted(content_words(group[0].title))[:3]), known)
    first = pool[0]
    # the second phrase must be shared by papers of the group, not one title's words
    second = next((p for p in pool[1:] if len(first.split()) + len(p.split()) <= 5 and p in shared
                   and (" " in p or _TERM.match(p))), None)
    return title_case(f"{first} and {second}" if second else first, known)


def check_heading(name: str, phrases: list[str], group: list[Source], topic: str, taken: list[str],
                  titles: list[str]) -> str | None:
    """The problem with a model-written heading, or None when it is usable."""
    words = name.split()
    if not 2 <= len(words) <= 6:
        return f"{len(words)} words (2-6 wanted)"
    if is_title_heading(name, titles):
        return "a paper's title"
    mine = content_words(name)
    if not mine or mine <= content_words(topic) | {w.rstrip("s") for w in _GENERIC}:
        return "only the topic's or the field's words"
    if len(mine - {w.rstrip("s") for w in _GENERIC}) < 2:
        return "fewer than two words that name a topic"
    group_words = content_words(" ".join(phrases))
    if not mine & group_words:
        return "none of the group's keyphrases"
    if not mine <= content_words(" ".join(f"{s.title} {s.text}" for s in group)) | content_words(topic):
        return "words that are not in the group's papers"
    if any(mine <= content_words(t) or content_words(t) <= mine for t in taken):
        return "the same as another section's heading"
    return None
