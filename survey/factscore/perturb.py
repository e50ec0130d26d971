"""Edits of a true sentence, to test and calibrate judges: meaning-keeping (a paraphrase) and meaning-changing
(negation, a changed number, an antonym).

A judge worth its name must accept a sentence copied from its source and a fair rewording of it, and reject
the same sentence negated or with a number changed; these edits build such variants from real abstracts
(tests, `cpm bench factscore_calibration`). The paraphrase is a rule-based rewording (a fixed table of
synonyms and survey-style rephrasings, at least two changes a sentence): weaker than a human paraphrase, and
said so wherever its numbers are reported.
"""
from __future__ import annotations

import re

_NEGATIONS = ((" is ", " is not "), (" are ", " are not "), (" can ", " cannot "),
              (" outperforms ", " does not outperform "), (" improves ", " does not improve "),
              (" reduces ", " does not reduce "), (" achieves ", " does not achieve "))
_HAS_NEGATION = re.compile(r"\b(not|no|never|cannot|without)\b")


def negate(sentence: str) -> str | None:
    """The sentence with its first negatable verb negated, or None."""
    for old, new in _NEGATIONS:
        if old in sentence:
            return sentence.replace(old, new, 1)
    return None


def change_number(sentence: str) -> str | None:
    """The sentence with its first stand-alone number changed (`8-bit` -> `31-bit`; `LLaMA2` untouched)."""
    match = re.search(r"(?<![\w.])\d+(?:\.\d+)?", sentence)
    if not match:
        return None
    value = match.group(0)
    new = str(int(value) * 3 + 7) if "." not in value else f"{float(value) * 3 + 1.3:.1f}"
    return sentence[:match.start()] + new + sentence[match.end():]


def candidate_sentence(abstract: str, need_number: bool) -> str | None:
    """A 10-30 word sentence of `abstract` that can be negated (or holds a number), free of LaTeX and of
    negations already (a second "not" is a pattern a small LM copies, which hides the edit)."""
    text = " ".join(abstract.split())
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
        words = sentence.split()
        if not 10 <= len(words) <= 30 or "$" in sentence or "\\" in sentence or not sentence.endswith("."):
            continue
        if _HAS_NEGATION.search(sentence):
            continue
        if change_number(sentence) if need_number else negate(sentence):
            return sentence
    return None


# Rewordings that keep the meaning, in the voice a survey uses for a paper ("we propose" -> "the authors
# propose"); word-bounded, case-insensitive, applied left to right.
_PARAPHRASES = (
    (r"^in this (?:paper|work|study), we ", "The authors "), (r"^we ", "The authors "), (r"\bwe\b", "the authors"),
    (r"\bour\b", "their"), (r"\bpropose\b", "introduce"), (r"\bproposes\b", "introduces"),
    (r"\bdemonstrate\b", "show"), (r"\bdemonstrates\b", "shows"), (r"\bsignificantly\b", "substantially"),
    (r"\bimproves\b", "enhances"), (r"\bimprove\b", "enhance"), (r"\bmethod\b", "approach"),
    (r"\bmethods\b", "approaches"), (r"\bnovel\b", "new"), (r"\butilize\b", "use"), (r"\butilizes\b", "uses"),
    (r"\benables\b", "allows"), (r"\benable\b", "allow"), (r"\breduces\b", "lowers"), (r"\breduce\b", "lower"),
    (r"\bexperiments\b", "evaluations"), (r"\bexisting\b", "prior"), (r"\bleverages\b", "exploits"),
    (r"\bleverage\b", "exploit"), (r"\bstate-of-the-art\b", "leading"), (r"\boutperforms\b", "surpasses"),
    (r"\bsubstantial\b", "considerable"), (r"\bcrucial\b", "essential"), (r"\bcapabilities\b", "abilities"),
    (r"\btasks\b", "problems"), (r"\bapproach\b", "technique"), (r"\bframework\b", "system"),
    (r"\bhowever\b", "yet"), (r"\bfurthermore\b", "moreover"), (r"\bspecifically\b", "in particular"),
    (r"\blarge language models \(LLMs\)", "LLMs"), (r"\blarge language models\b", "LLMs"),
    (r"\bachieves\b", "reaches"), (r"\bachieve\b", "reach"),
    (r"\bmodels\b", "systems"), (r"\bpaper\b", "work"), (r"\bshow that\b", "find that"),
)
# Opposites that flip a claim without a negation cue (the case the exact checks cannot see).
_ANTONYMS = (("increases", "decreases"), ("decreases", "increases"), ("improves", "degrades"),
             ("outperforms", "underperforms"), ("higher", "lower"), ("lower", "higher"), ("faster", "slower"),
             ("better", "worse"), ("more", "fewer"), ("larger", "smaller"), ("smaller", "larger"),
             ("reduces", "increases"), ("efficient", "inefficient"), ("effective", "ineffective"))


def paraphrase(sentence: str, min_changes: int = 2) -> str | None:
    """A survey-style rewording, or None when fewer than `min_changes` table entries apply: synonyms from the
    table, parentheticals dropped (`(LLMs)`), and, unless it already speaks of "the authors", the frame
    "The paper reports that ..." (the words a survey adds around a paper's claim)."""
    text, changes = sentence, 0
    for pattern, new in _PARAPHRASES:
        text, n = re.subn(pattern, new, text, count=1, flags=re.I)
        changes += n
    if changes < min_changes:
        return None
    text = re.sub(r"\s*\([^()]*\)", "", text)
    if not text.startswith("The authors"):
        first = text[0].lower() if text[1:2].islower() else text[0]
        text = f"The paper reports that {first}{text[1:]}"
    return text[0].upper() + text[1:]


def antonym(sentence: str) -> str | None:
    """The sentence with its first word from the antonym table swapped for its opposite, or None."""
    for old, new in _ANTONYMS:
        match = re.search(rf"\b{old}\b", sentence)
        if match:
            return sentence[:match.start()] + new + sentence[match.end():]
    return None
