"""Unit tests of the grounded writer's domain code (no model): quality measures, grounded sentences, topic
groups and headings, the post-check, the synthesis of introduction and conclusion."""
from __future__ import annotations

import numpy as np
import pytest

from survey.errors import SurveyError
from survey.grounding import accept_rewrite, contribution_clause, parse_rewrite, pipeline_sentence, supported_share
from survey.outline import SectionPlan, name_section, parse_heading
from survey.postcheck import attach, clean_parts
from survey.quality import has_hole, is_title_heading, is_verbatim, longest_copy, repeated_ngram_rate, repeats
from survey.section import SectionResult
from survey.sources import Source
from survey.synthesis import conclusion, introduction
from survey.topics import check_heading, group_sources, keyphrase_heading, keyphrases

PREDGEN = Source(
    id="2506.15556", title="PredGen: Accelerated Inference of Large Language Models through Input-Time Speculation",
    authors="Shufan Li, Aditya Grover", score=0.6,
    text="Large Language Models (LLMs) are widely used in real-time voice chat applications. However, their large "
         "size often leads to noticeable latency between the end of user input and the start of audio output. "
         "To address this bottleneck, we propose Predictive Generation (PredGen), a novel framework that "
         "mitigates-or even eliminates-this delay through speculative decoding at input time. Simulated "
         "experiments on the Lmsys and MT-Bench datasets show that the proposed method can effectively reduce "
         "the latency by around 2x across a wide range of use cases.")


def _src(i: int, title: str, text: str, score: float = 0.5) -> Source:
    return Source(id=f"2501.{i:05d}", title=title, authors=f"Author{i} Surname{i}", text=text, score=score)


QUANT = [_src(1, "Weight Quantization for Phones", "We quantize weights to 4 bits. Weight quantization cuts memory on phones."),
         _src(2, "Low-bit Weight Quantization", "Weight quantization to 3 bits keeps accuracy. Memory drops by half."),
         _src(3, "Activation Quantization Study", "We study weight quantization and activation quantization in LLMs.")]
SPEC = [_src(4, "Draft Models for Speculative Decoding", "Speculative decoding uses a draft model. Draft tokens are verified."),
        _src(5, "Tree Speculative Decoding", "Speculative decoding with token trees verifies many draft tokens."),
        _src(6, "Self-Speculative Decoding Heads", "Draft heads enable speculative decoding without a draft model.")]


def test_survey_quality_measures():
    assert has_hole("This paper contributes to the field of by providing a method.")
    assert has_hole("It is due to the. Next") and has_hole("A method () works") and has_hole("This work does X.")
    assert not has_hole("Methods in the era of LLMs run on-device.") and not has_hole("It speeds up by 2.5x.")
    assert repeated_ngram_rate(["a b c d e", "a b c d"]) == pytest.approx(1 / 3)
    assert repeated_ngram_rate(["one two three"]) == 0.0
    assert repeats("Draft models verify tokens [@a].", ["Draft models verify tokens."])
    assert not repeats("Quantization cuts memory.", ["Draft models verify tokens."])
    copy = "the proposed method can effectively reduce the latency by around 2x across a wide range of use cases"
    assert longest_copy(copy, PREDGEN.text) == 1.0 and is_verbatim(copy + " [3].", [PREDGEN.text])
    assert is_title_heading("Efficient Compositional Multi-tasking for On-device",
                            ["Efficient Compositional Multi-tasking for On-device Large Language Models"])
    assert is_title_heading("Accelerated Inference of Large Language Models through Input-Time Speculation",
                            [PREDGEN.title])  # the subtitle of a "Name: subtitle" title
    assert not is_title_heading("Speculative Decoding", [PREDGEN.title])


def test_survey_contribution_clause_rewrites_first_person():
    text = contribution_clause("To address this bottleneck, we propose Predictive Generation (PredGen), a novel "
                               "framework that mitigates this delay through speculative decoding.", "Li")
    assert text == "Predictive Generation (PredGen), a framework, mitigates this delay through speculative decoding"
    assert contribution_clause("We propose a framework for approximate inference that leverages draft models.",
                               "Galim") == "A framework for approximate inference leverages draft models"
    assert contribution_clause("In this work, we study how quantization affects long inputs.", "Mekala") == \
        "The authors study how quantization affects long inputs"
    assert contribution_clause("In this work, we propose two strategies for demonstration selection.", "Golchin") \
        == "The authors propose two strategies for demonstration selection"  # short: no surname to carry
    long = ("In this work, we propose two strategies for demonstration selection in many-shot in-context learning "
            "that improve performance with minimal computational overhead.")
    assert contribution_clause(long, "Golchin").startswith("Golchin et al. propose two strategies")


def test_survey_pipeline_sentence_is_grounded_not_copied():
    grounded = pipeline_sentence(PREDGEN, {"latency", "speculative", "decoding"}, max_words=45)
    assert grounded is not None and grounded.method == "pipeline"
    assert "PredGen" in grounded.text and "reduce the latency by around 2x" in grounded.text
    assert not is_verbatim(grounded.text, [PREDGEN.text])  # two sentences joined: no single long copy
    assert supported_share(grounded.text, PREDGEN.text) >= 0.9  # its words are the abstract's
    assert not has_hole(grounded.text) and " we " not in f" {grounded.text.lower()} "


def test_survey_model_rewrite_accepted_only_when_grounded_and_new():
    passage = PREDGEN.text.split(". ")[2]
    good = "PredGen mitigates this delay through speculative decoding at input time"
    assert accept_rewrite(good + ".", PREDGEN, passage, []) == good
    assert accept_rewrite("PredGen reduces the latency by 5x with speculative decoding at input time", PREDGEN,
                          passage, []) is None  # a number the passage does not give
    assert accept_rewrite("This paper is a great contribution to the whole research community of today", PREDGEN,
                          passage, []) is None  # words the passage does not have
    assert accept_rewrite(passage, PREDGEN, passage, []) is None  # a copy
    assert accept_rewrite(good, PREDGEN, passage, [good]) is None  # said already
    assert parse_rewrite('{"sentence": "PredGen works."}') == "PredGen works."
    assert parse_rewrite('{"sentence": "PredGen wor') == ""  # cut off by max_tokens: nothing to keep
    assert parse_rewrite("PredGen works.") == "PredGen works."  # a backend without grammars answers in text
    assert accept_rewrite(good + ". However, prior work focused on the delay of others", PREDGEN, passage, []) is None


def test_survey_groups_are_balanced_and_each_has_two_papers():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(2, 16))
    vectors = np.stack([centers[0] + 0.05 * rng.normal(size=16) for _ in QUANT] +
                       [centers[1] + 0.05 * rng.normal(size=16) for _ in SPEC])
    groups = group_sources(QUANT + SPEC, vectors, 2)
    assert sorted(sorted(s.id for s in g) for g in groups) == [[s.id for s in QUANT], [s.id for s in SPEC]]
    with pytest.raises(SurveyError, match="fewer --sections"):
        group_sources(QUANT, vectors[:3], 2)


def test_survey_keyphrases_name_groups_never_by_title():
    groups = [QUANT, SPEC]
    phrases = keyphrases(groups, "efficient inference")
    assert phrases[0][0] == "weight quantization" and phrases[1][0] == "speculative decoding"
    heading = keyphrase_heading(phrases[1], SPEC, [])
    assert heading.startswith("Speculative Decoding")
    titles = [s.title for s in QUANT + SPEC]
    assert check_heading("Tree Speculative Decoding", phrases[1], SPEC, "efficient inference", [], titles) == \
        "a paper's title"
    assert "topic" in check_heading("Efficient Inference", phrases[1], SPEC, "efficient inference", [], titles)
    assert check_heading("Draft Models and Trees", phrases[1], SPEC, "x", [], titles) is None
    assert check_heading("Bananas and Apples", phrases[1], SPEC, "x", [], titles) == "none of the group's keyphrases"
    name, by, rejected = name_section('{"heading": "Tree Speculative Decoding"}', phrases[1], SPEC, "x", [], titles)
    assert by == "keyphrases" and "title" in rejected and not is_title_heading(name, titles)
    assert parse_heading('{"heading": "Draft Models"}') == "Draft Models" and parse_heading("Draft Models\nx") == \
        "Draft Models"


def test_survey_postcheck_drops_repeats_holes_and_loops():
    parts = [SectionResult(index=0, title="A", text=f"{attach('Draft models verify tokens', ['x'])} "
                           "This paper contributes to the field of by providing a method [@y]."),
             SectionResult(index=1, title="B", text="Draft models verify tokens [@z]. The model the model the model "
                           "the model loops. Quantization cuts memory [@q].")]
    cleaned, dropped = clean_parts(parts)
    assert cleaned[0].text == "Draft models verify tokens [@x]." and cleaned[0].cited_ids == ["x"]
    assert cleaned[1].text == "Quantization cuts memory [@q]." and cleaned[1].cited_ids == ["q"]
    assert [d.split(": ")[1] for d in dropped] == ["unfilled template", "repeats an earlier sentence", "loops"]


def test_survey_introduction_and_conclusion_synthesise():
    sections = [SectionPlan(title="Weight Quantization", goal="", keyphrases=["weight quantization", "phone memory"]),
                SectionPlan(title="Speculative Decoding", goal="", keyphrases=["speculative decoding", "draft tokens"])]
    intro = introduction("efficient inference", sections, [QUANT, SPEC], [PREDGEN])
    text = " ".join(t for t, _ in intro)
    assert "6 papers this survey draws on fall into 2 groups by topic, Weight Quantization and Speculative Decoding" in text
    assert intro[0][1] == [PREDGEN.id]  # the problem, in the cited abstract's words
    hard = _src(7, "Long Inputs", "We study quantized models on long inputs. Accuracy on inputs past 64K tokens "
                                  "remains an open problem for 4-bit models, which lose up to 16% of their accuracy "
                                  "on the long-form outputs that users ask for most often.")
    outro = conclusion("efficient inference", sections, [[PREDGEN], [hard]])
    assert outro[0] == ("The groups differ in focus: one on phone memory and one on draft tokens", [])
    # an open problem the abstract names is cited to it, and written only when it is not a copy of it
    for text, ids in outro[1:]:
        assert ids == [hard.id] and not is_verbatim(text, [hard.text])
