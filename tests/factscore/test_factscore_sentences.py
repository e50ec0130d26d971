"""Sentence splitting on the survey writer's real output (fixtures/: two `cpm survey` runs on the shared corpus,
2026-12-07) and on the abbreviations docs/factscore.md promises to keep whole."""
import re
from pathlib import Path

import pytest

from survey.factscore.markdown import parse_survey
from survey.factscore.sentences import split_raw, split_sentences

FIXTURES = Path(__file__).parent / "fixtures"


def _sentences(name: str):
    parsed = parse_survey((FIXTURES / name).read_text(encoding="utf-8"))
    return [s for section in parsed.sections for s in split_sentences(section.title, section.body)]


def test_factscore_split_keeps_the_writers_grounded_sentence_whole():
    text = 'Kobus et al. (2025) present "Fast Attention. A Study of Sparse Kernels" [3]. Next, caching helps [4].'
    assert split_raw(text) == ['Kobus et al. (2025) present "Fast Attention. A Study of Sparse Kernels" [3].',
                               "Next, caching helps [4]."]
    assert split_raw('Kobus et al. (2025) present "..." [3].') == ['Kobus et al. (2025) present "..." [3].']


@pytest.mark.parametrize("abbreviation", ["et al.", "e.g.", "i.e.", "Fig.", "Eq.", "vs.", "cf.", "Sec."])
def test_factscore_split_never_ends_at_an_abbreviation(abbreviation):
    text = f"Sparse attention ({abbreviation} Kernels 2 and 3) is fast [1]. Caching is a second idea [2]."
    assert split_raw(text) == [f"Sparse attention ({abbreviation} Kernels 2 and 3) is fast [1].",
                               "Caching is a second idea [2]."]
    bare = f"The result of Smith {abbreviation} Table 2 holds. Caching is a second idea."
    assert len(split_raw(bare)) == 2


def test_factscore_split_markers_after_the_full_stop_stay_with_their_sentence():
    assert split_raw("A does caching. [3] B does pruning. [4]") == ["A does caching. [3]", "B does pruning. [4]"]
    assert split_raw('It was called "A Study." Then more text follows.') == ['It was called "A Study."',
                                                                             "Then more text follows."]


@pytest.mark.parametrize("fixture", ["demo_survey.md", "sd_survey.md"])
def test_factscore_split_real_survey_output(fixture):
    sentences = _sentences(fixture)
    grounded = [s for s in sentences if re.search(r"et al\. \(\d{4}\) present", s.raw)]
    assert grounded, "the fixture holds the writer's grounded sentences"
    for s in grounded:  # one claim each, cited, and not cut at "et al." or inside the quoted title
        assert s.raw.endswith("].") and len(s.citations) == 1
        assert s.text.count('"') == 2
    for s in sentences:
        assert not s.raw.rstrip().endswith(("et al.", "e.g.", "i.e.")), s.raw
        assert not re.match(r"\(\d{4}\)", s.raw), s.raw   # a year never starts a sentence: it was cut before
        assert s.raw.count('"') % 2 == 0, s.raw            # a quoted title is never split


def test_factscore_split_demo_survey_counts():
    """The demo survey's 5 sections + introduction + conclusion: 21 sentences of 3+ words, 16 cited."""
    sentences = _sentences("demo_survey.md")
    assert len(sentences) == 21
    assert sum(bool(s.citations) for s in sentences) == 16
