"""Markdown, references and sentence parsing for FactScore: no model needed."""
from survey.factscore.markdown import parse_citation_numbers, parse_reference_entry, parse_survey
from survey.factscore.sentences import split_sentences

SURVEY = """# A survey of attention

Intro text is here, e.g. this one [1]. Another claim follows. [2]

## Methods
- **Sparse** attention reduces cost by 2.5x [1, 3-4]. A does X quickly [1], while B does Y slowly [2].

```python
x = 1. This is code [9].
```

### Details
See Fig. 3 for the details of the method.

## References
[1] Attention Is All You Need. Ashish Vaswani, Noam Shazeer, 2017. arXiv:1706.03762
[2] Some other title
    wrapped onto a second line. A B, 2020.
3. Numbered style entry. C D, 2021. https://arxiv.org/abs/2101.00001v2
"""


def test_factscore_sections_and_references():
    parsed = parse_survey(SURVEY)
    assert parsed.title == "A survey of attention"
    assert [s.title for s in parsed.sections] == ["A survey of attention", "Methods"]
    assert set(parsed.references) == {1, 2, 3}
    assert parsed.references[1].arxiv_id == "1706.03762"
    assert parsed.references[1].title == "Attention Is All You Need"
    assert parsed.references[3].arxiv_id == "2101.00001"
    assert "second line" in parsed.references[2].raw
    assert "code" not in parsed.sections[1].body and "Details" not in parsed.sections[1].body
    assert parsed.problems == []


def test_factscore_citation_numbers():
    assert parse_citation_numbers("1, 3-5") == [1, 3, 4, 5]
    assert parse_citation_numbers("2;7") == [2, 7]
    assert parse_citation_numbers("1-100000") == []  # absurd ranges are dropped, not expanded


def test_factscore_sentences_keep_markers():
    parsed = parse_survey(SURVEY)
    intro = split_sentences(parsed.sections[0].title, parsed.sections[0].body)
    assert [s.citations for s in intro] == [[1], [2]]  # `e.g.` did not split; `. [2]` stayed attached
    assert intro[0].text == "Intro text is here, e.g. this one."
    methods = split_sentences("Methods", parsed.sections[1].body)
    assert methods[0].citations == [1, 3, 4] and "2.5x" in methods[0].text
    assert methods[1].segments == [("A does X quickly", [1]), ("while B does Y slowly", [2])]
    assert methods[2].text.startswith("See Fig. 3") and methods[2].citations == []


def test_factscore_no_references_is_a_problem_not_a_crash():
    parsed = parse_survey("## Intro\nA claim with a citation [1].\n")
    assert parsed.references == {}
    assert any("no references list" in p for p in parsed.problems)


def test_factscore_reference_styles():
    ref = parse_reference_entry(4, 'Min, S. et al. "FActScore: Fine-grained atomic evaluation." EMNLP 2023.')
    assert ref.title.startswith("FActScore") and ref.arxiv_id is None
    assert parse_reference_entry(5, "arXiv:2305.14251").title == ""
