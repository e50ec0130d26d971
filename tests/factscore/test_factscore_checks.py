"""The exact number and negation checks the embedding judge applies to its best-matching span."""
from survey.factscore.checks import aligned_negations, numbers, problems


def test_factscore_numbers_are_read_as_written():
    assert numbers("LLaMA2 uses 8-bit weights, 1,000 tokens and 2.5x speed (2025).") == {"8", "1000", "2.5", "2025"}
    assert numbers("GPT-4 is large") == {"4"}   # after a hyphen: a number; glued to letters (LLaMA2): a name


def test_factscore_checks_catch_a_changed_number_and_an_added_or_dropped_negation():
    source = "Quantization to 8-bit reduces memory by 4x."
    assert problems("Quantization to 8-bit reduces memory by 4x.", source) == []
    assert problems("Quantization to 31-bit reduces memory by 4x.", source) == ["numbers not in the evidence: 31"]
    assert problems("Quantization to 8-bit does not reduce memory by 4x.", source)[0].startswith("negation differs")
    assert problems("Pruning improves accuracy.", "Pruning does not improve accuracy.")  # a dropped "not"


def test_factscore_negation_counts_only_the_clauses_the_claim_restates():
    source = ("While speculative decoding algorithms mitigate this inefficiency through parallel verification, "
              "they fail to exploit the heterogeneity in linguistic complexity.")
    assert aligned_negations("Speculative decoding algorithms mitigate this inefficiency.", source) == 0
    assert problems("Speculative decoding algorithms mitigate this inefficiency.", source) == []
    assert problems("Speculative decoding algorithms do not mitigate this inefficiency.", source)
