"""Grounded sentences: what a survey says about one paper, built from that paper's own abstract.

A 135M model cannot be trusted to state a paper's contribution, so the pipeline does it: it picks the abstract's
key sentences for the section's topic (the contribution, the result, the problem), turns them into survey prose
(third person, hedges and asides removed, "we propose X, a framework that does Y" -> "X is a framework that does
Y", the result clause joined on), and checks that the sentence is neither a copy of the abstract nor a claim the
abstract does not make. The model may offer its own rewrite (see `accept_rewrite`); the checks decide.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, Field

from survey.quality import has_hole, has_inner_repeat, longest_copy, VERBATIM_SHARE
from survey.sources import Source
from survey.text import STOPWORDS, clean, content_words, sentences

# Cues of what an abstract sentence does.
_CONTRIBUTION = re.compile(r"\b(?:we|this (?:paper|work|study|article)|in this (?:paper|work))\b.{0,40}?\b"
                           r"(?:propose|present|introduce|develop|design|build|devise|describe|offer|construct)s?\b",
                           re.I)
_RESULT = re.compile(r"\b(?:achiev|outperform|reduc|improv|speed|faster|accelerat|surpass|lower|boost|cut|"
                     r"up to|match|retain|preserv|show that|demonstrate)", re.I)
_FIRST_PERSON = re.compile(r"\b(?:we|our|us|ours)\b", re.I)
# Asides a survey sentence does without: praise, hedges, sign-posting, links.
_HEDGES = re.compile(r"\b(?:novel|new|simple yet effective|simple but effective|simple|effectively|"
                     r"significantly|substantially|extensive|comprehensive|carefully|very|highly|"
                     r"to the best of our knowledge,?|specifically,?|furthermore,?|moreover,?|additionally,?|"
                     r"in addition,?|notably,?|importantly,?|finally,?)\s+", re.I)
_LEAD = re.compile(r"^(?:to (?:address|tackle|solve|overcome|bridge|fill|mitigate|this end)[^,]{0,60},\s*|"
                   r"in this (?:paper|work|study|article),\s*|here,\s*|thus,\s*|therefore,\s*|however,\s*)", re.I)
_URL = re.compile(r"\s*(?:\(?https?://\S+\)?|\bcode (?:is|and [a-z ]+ are) (?:publicly )?available.*$)", re.I)
_DASH_ASIDE = re.compile(r"\s*-{1,2}\s*or even [^-]+-\s*|"
                         r"\s+[-\u2013\u2014]{1,2}\s[^-\u2013\u2014]{1,60}\s[-\u2013\u2014]{1,2}\s+")
_PAREN = re.compile(r"\s*\(([^()]*)\)")
_CLAUSE_CUT = re.compile(r",\s+(?:which|while|whereas|where|thereby|enabling|allowing|making|leading|resulting|"
                         r"and|but|as well as|including|such as)\b")
# "we propose X, a framework that Y"; "we propose a framework for Z that Y"; "we propose X, which Y"
_VERB = r"(?P<verb>propose|present|introduce|develop|design|build|devise|describe|offer|construct)s?"
_WE_VERB = re.compile(rf"^(?:.*?\b)?(?:we|this (?:paper|work|study|article))\s+(?:also\s+|further\s+|first\s+)?"
                      rf"{_VERB}\s+(?P<obj>.+)$", re.I)
_NAMED_KIND = re.compile(r"^(?P<name>[A-Z][\w\-.]*(?:\s+[\w\-.]+){0,5}?(?:\s+\([^()]{1,30}\))?),\s+"
                         r"(?P<kind>(?:a|an)\s+[^,]{3,80}?)\s+(?:that|which)\s+(?P<pred>.+)$")
_KIND = re.compile(r"^(?P<kind>(?:a|an)\s+[^,]{3,90}?)\s+(?:that|which)\s+(?P<pred>[a-z]+s\b.+)$", re.I)
_NAMED_WHICH = re.compile(r"^(?P<name>[A-Z][\w\-.]*(?:\s+\([^()]{1,30}\))?),?\s+(?:which|that)\s+(?P<pred>.+)$")
_SHOW_THAT = re.compile(r"^(?:.*?\b)?(?:show|shows|demonstrate|demonstrates|find|finds|reveal|reveals|indicate|"
                        r"indicates|confirm|confirms)\s+that\s+(?P<claim>.+)$", re.I)
_OUR = [(re.compile(r"\bour (?=[A-Z][\w\-]*[A-Z])"), ""), (re.compile(r"\bour\b", re.I), "the"),
        (re.compile(r"\bwe\b", re.I), "the authors"),
        (re.compile(r"\bus\b", re.I), "them")]
MIN_WORDS, MAX_WORDS = 8, 45
ATTRIBUTION_WORDS = 16  # shorter sentences say "The authors", not "Surname et al." (fewer words not in the source)


@dataclass
class Grounded:
    """One sentence about one paper, with where it came from (for the trace)."""

    text: str  # no citation marker; the caller attaches it
    source_id: str
    method: str  # "pipeline" | "model"
    from_sentences: list[int]  # indices of the abstract sentences it was built from


def abstract_sentences(source: Source) -> list[str]:
    return [s for s in sentences(source.text) if 4 <= len(s.split()) <= 80]


def _score(sentence: str, position: int, focus: set[str]) -> float:
    """How well a sentence states what a survey section about `focus` needs from this paper."""
    score = 1.5 * len(content_words(sentence) & focus)
    score += 3.0 if _CONTRIBUTION.search(sentence) else 0.0
    score += 1.5 if _RESULT.search(sentence) else 0.0
    score += 0.5 if re.search(r"\d", sentence) else 0.0
    score -= 1.0 if position == 0 and not _CONTRIBUTION.search(sentence) else 0.0  # usually background
    score -= 2.0 if _URL.search(sentence) else 0.0
    return score


PASSAGE_WORDS = 90  # a claim joined from two sentences must be checkable against one passage of this size


def windows(sents: list[str]) -> list[int]:
    """The passage each sentence falls in when the abstract is read in passages of about PASSAGE_WORDS words."""
    out, window, words = [], 0, 0
    for sent in sents:
        n = len(sent.split())
        if words and words + n > PASSAGE_WORDS:
            window, words = window + 1, 0
        out.append(window)
        words += n
    return out


def key_sentences(source: Source, focus: set[str]) -> tuple[int | None, int | None]:
    """(contribution, second): the abstract sentences that say what the paper does, and what it finds.

    The contribution is the best-scoring sentence with a contribution cue (else the best sentence); the second is
    the best other sentence within two of it (a result cue scores highest), so that both sit in one passage of the
    abstract and a claim joining them is still checkable against one passage.
    """
    sents = abstract_sentences(source)
    if not sents:
        return None, None
    scored = [(_score(s, i, focus), i) for i, s in enumerate(sents)]
    cues = [(sc, i) for sc, i in scored if _CONTRIBUTION.search(sents[i])]
    contribution = max(cues or scored)[1]
    # only a sentence of the same passage: the joined claim must be checkable against one passage
    window = windows(sents)
    near = [(sc + (3.0 if i > contribution and _RESULT.search(sents[i]) else 0.0)
             + (2.0 if abs(i - contribution) == 1 else 0.0), i) for sc, i in scored
            if i != contribution and abs(i - contribution) <= 2 and not _URL.search(sents[i]) and i > 0
            and window[i] == window[contribution]]
    return contribution, (max(near)[1] if near else None)


def tidy(text: str) -> str:
    text = _URL.sub("", text)
    text = _DASH_ASIDE.sub(" ", text)
    text = _LEAD.sub("", clean(text))
    text = _HEDGES.sub("", text)
    # an aside in brackets stays only when it is a short name (an acronym: "(PredGen)")
    text = _PAREN.sub(lambda m: f" ({m.group(1)})" if re.fullmatch(r"[A-Za-z][\w\-]{1,15}", m.group(1)) else "",
                      text)
    text = re.sub(r"\s+([,.;:])", r"\1", clean(text))
    return text.rstrip(" ,;:.")


def third_person(text: str) -> str:
    for pattern, repl in _OUR:
        text = pattern.sub(repl, text)
    return text


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


_COMMON_STARTS = frozenset("""experiments experimental results extensive evaluation evaluations empirical compared
comprehensive across without despite building unlike consequently specifically existing""".split())


def lower_start(text: str, known: str = "") -> str:
    """Lower-case the first word unless it is an acronym or a name: two capitals, or (given the abstract as
    `known`) a word the abstract never writes in lower case ("Chelsea then merges ...")."""
    first = text.split(" ", 1)[0]
    if sum(c.isupper() for c in first) > 1:
        return text
    word = first.strip(",;:()").lower()
    common = word in STOPWORDS or word in _COMMON_STARTS
    if known and word and not common and not re.search(rf"[a-z,;] {re.escape(word)}\b", known):
        return text  # never written in lower case mid-sentence: a name
    return text[:1].lower() + text[1:]


def contribution_clause(sentence: str, surname: str) -> str:
    """'In this paper, we propose X, a novel framework that does Y.' -> 'X is a framework that does Y'."""
    text = tidy(sentence)
    match = _WE_VERB.match(text)
    if not match:
        return _sentence_case(third_person(text))
    obj, verb = match.group("obj"), match.group("verb").lower()
    # "X, a framework, does Y": the abstract's words, rearranged, so not one long copy of them
    for pattern, form in ((_NAMED_KIND, "{name}, {kind}, {pred}"), (_KIND, "{kind} {pred}"),
                          (_NAMED_WHICH, "{name} {pred}")):
        m = pattern.match(obj)
        if m:
            parts = {k: v for k, v in m.groupdict().items()}
            if "kind" in parts and form.startswith("{kind}"):
                parts["kind"] = _sentence_case(re.sub(r"^(?:a|an)\s+", "", parts["kind"], flags=re.I))
                parts["kind"] = ("An " if parts["kind"][:1].lower() in "aeiou" else "A ") + lower_start(parts["kind"])
            return _sentence_case(third_person(form.format(**parts)))
    # "Surname et al." costs three words the abstract does not have: only on a long sentence
    subject = f"{surname} et al." if len(obj.split()) >= ATTRIBUTION_WORDS else "The authors"
    return f"{subject} {verb} {third_person(obj)}"


def result_clause(sentence: str, known: str = "") -> str:
    """'Experiments show that our method reduces latency by 2x.' -> 'the method reduces latency by 2x'."""
    text = tidy(sentence)
    match = _SHOW_THAT.match(text)
    if match:
        text = match.group("claim")
    return lower_start(third_person(text), known)


def cut_clause(text: str) -> str:
    """Drop the last subordinate clause (', which ...', ', while ...'); the text itself when it has none."""
    cuts = list(_CLAUSE_CUT.finditer(text))
    if not cuts or len(text[:cuts[-1].start()].split()) < MIN_WORDS:
        return text
    return text[:cuts[-1].start()]


# a cut must not leave the sentence hanging on a word that needs what followed it
_DANGLING = re.compile(r"\b(?:and|or|of|the|a|an|showing|demonstrating|indicating|suggesting|revealing|including|"
                       r"namely|using|called|applied|used|proposed|based|designed|such as|such)$", re.I)


def shorter_forms(text: str) -> list[str]:
    """Shorter versions of the text, least cut first, always cut at the end (a middle cut changes the meaning):
    before its last comma-separated segments, then before a trailing phrase. A sentence that is still a copy of
    the abstract loses what made it one."""
    segments = re.split(r"(?<=,)\s+|(?<=;)\s+", text)
    out = [" ".join(segments[:keep]).rstrip(",; ") for keep in range(len(segments) - 1, 0, -1)]
    ends = [m.start() for m in re.finditer(r"\s(?:across|on|in|for|with|by|through|via|under|at|from|to|that|and|"
                                            r"between|after|before|during|into|over|while|which)\s",
                                            text)]
    out += [text[:end].rstrip(",; ") for end in reversed(ends)]
    return [o for o in out if len(o.split()) >= MIN_WORDS and not _DANGLING.search(o)]


# "X, one of the Y" at the end, with no verb after it: a cut left the sentence saying nothing
_APPOSITIVE_END = re.compile(r",\s+(?:one of|a|an)\s(?![^,;]*\b(?:that|which|who|to)\b)[^,;]*$")
_SUBORDINATE = re.compile(r"^(?:\w+ et al\. (?:report|note) that )?(?:although|though|while|whereas|because|since|if|"
                          r"when|unlike|despite|as)\b", re.I)


def fits(text: str, abstract: str) -> bool:
    """A usable grounded sentence: long enough, not a copy of the abstract, no loop, no unfilled slot, and not
    a subordinate clause left alone by a cut ("Although techniques like pruning ...")."""
    n = len(text.split())
    return (MIN_WORDS <= n <= MAX_WORDS and longest_copy(text, abstract) <= VERBATIM_SHARE
            and not has_inner_repeat(text) and not has_hole(text) and not _FIRST_PERSON.search(text)
            and not _SUBORDINATE.match(text) and not _APPOSITIVE_END.search(text))


def _candidates(main: str, second: str | None, surname: str, known: str) -> list[str]:
    """Sentences to try, best first: the contribution with the second sentence's claim joined on (two sources
    of wording, so never one long copy), the contribution alone, then shorter and attributed forms."""
    out = []
    if second:
        out += [f"{main}; {second}", f"{cut_clause(main)}; {cut_clause(second)}"]
    out += [main, *shorter_forms(main)]
    if not main.startswith(f"{surname} et al.") and "the authors" not in main.lower():  # still a copy: say whose
        out += [f"{surname} et al. report that {lower_start(text, known)}" for text in [main, *shorter_forms(main)]
                if len(text.split()) >= ATTRIBUTION_WORDS]
    return list(dict.fromkeys(out))


def pipeline_sentence(source: Source, focus: set[str], max_words: int) -> Grounded | None:
    """The pipeline's sentence about `source` (see the module doc); None when every form is a copy or too long."""
    contribution, second = key_sentences(source, focus)
    if contribution is None:
        return None
    sents = abstract_sentences(source)
    main = contribution_clause(sents[contribution], source.first_author_surname)
    other = result_clause(sents[second], source.text) if second is not None else None
    for text in _candidates(main, other, source.first_author_surname, source.text):
        if len(text.split()) <= max_words and fits(text, source.text):
            used = [contribution] + ([second] if other and text.endswith(other[-20:]) else [])
            return Grounded(text, source.id, "pipeline", used)
    return None


def copied_sentence(source: Source, focus: set[str]) -> str | None:
    """The last resort for a paper that must be cited: its contribution sentence, tidied and in the third person
    but close to the abstract's wording (the trace counts these)."""
    contribution, _ = key_sentences(source, focus)
    if contribution is None:
        return None
    text = contribution_clause(abstract_sentences(source)[contribution], source.first_author_surname)
    text = " ".join(text.split()[:MAX_WORDS])
    return text if not has_hole(text) and not has_inner_repeat(text) else None


def supported_share(text: str, evidence: str) -> float:
    """Share of the sentence's words (numbers included, function words aside) that occur in `evidence`."""
    mine = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower())
    have = set(re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", evidence.lower()))
    mine = [w for w in mine if w not in _FUNCTION]
    return sum(w in have for w in mine) / len(mine) if mine else 0.0


_FUNCTION = frozenset("""a an the of and or in on for to with by from as at is are was were be been being this that these
those it its their they which who than then also can may such via into over under more most less using use used
based between both each other only very et al""".split())
REWRITE_SUPPORT = 0.85  # words of a model rewrite that must occur in the passage it was given


def accept_rewrite(text: str, source: Source, passage: str, earlier: list[str]) -> str | None:
    """The model's rewrite when it says only what `passage` says, in other words; None otherwise."""
    text = clean(re.sub(r"\[[^\]]*\]", "", text or "")).strip(" \"'")
    if not text or len(sentences(text)) != 1:  # one sentence, as asked: a second one is unchecked text
        return None
    text = _sentence_case(text.rstrip(" .;,"))
    numbers = set(re.findall(r"\d+(?:\.\d+)?", text))
    if not numbers <= set(re.findall(r"\d+(?:\.\d+)?", passage)):
        return None  # a number the passage does not give is invented
    if supported_share(text, passage) < REWRITE_SUPPORT or not fits(text, source.text):
        return None
    if any(content_words(text) <= content_words(prev) for prev in earlier):
        return None
    # A sentence about the paper's title or about "the paper" in general says nothing about its content.
    if longest_copy(text, source.title) > 0.5 or len(content_words(text) - content_words(source.title)) < 4:
        return None
    return text


class RewriteAnswer(BaseModel):
    """One survey sentence about the passage's work: plain prose, no citation brackets, no line breaks."""

    sentence: str = Field(pattern=r'^[A-Z][^\[\]\n"]+$')


def rewrite_schema() -> dict:
    """The `response_format` of the rewrite call (grammar-decoded on the engine): one JSON string field."""
    return {"type": "json_schema", "json_schema": {"name": "RewriteAnswer", "strict": True,
                                                   "schema": RewriteAnswer.model_json_schema()}}


def parse_rewrite(text: str) -> str:
    """The sentence of the model's JSON answer (or the bare text, from a backend without grammars)."""
    try:
        value = json.loads(text).get("sentence", "")
    except (json.JSONDecodeError, AttributeError):
        # a JSON answer cut off by max_tokens ends mid-sentence: nothing to keep
        value = "" if (text or "").lstrip().startswith("{") else (text or "")
    return clean(str(value))


def passage_for(source: Source, grounded: Grounded | None, focus: set[str]) -> str:
    """The abstract sentences a rewrite may use: those the pipeline's sentence came from, else the key ones."""
    sents = abstract_sentences(source)
    used = grounded.from_sentences if grounded else [i for i in key_sentences(source, focus) if i is not None]
    return " ".join(sents[i] for i in sorted(set(used)) if i < len(sents))
