"""Claim validation/attribution and strict verdict parsing: the guards around a weak model's output."""
from survey.factscore.claims import claims_from_model, validate
from survey.factscore.judge import UNPARSABLE, parse_verdict
from survey.factscore.sentences import split_sentences

SENTENCE = split_sentences("S", "GPTQ quantizes weights to 4 bits [1], while AWQ protects salient channels [2].")[0]


def test_factscore_model_claims_kept_with_their_markers():
    claims = claims_from_model(SENTENCE, ["GPTQ quantizes weights to 4 bits.", "AWQ protects salient channels."])
    assert [(c.method, c.citations) for c in claims] == [("model", [1]), ("model", [2])]


def test_factscore_invented_claim_falls_back_to_sentence():
    claims = claims_from_model(SENTENCE, ["GPTQ quantizes weights to 4 bits.", "Paris is the capital of France."])
    assert len(claims) == 1 and claims[0].method == "sentence" and claims[0].citations == [1, 2]
    assert claims_from_model(SENTENCE, None)[0].method == "sentence"
    assert validate([], SENTENCE.text) is None


def test_factscore_verdict_parsing_is_strict():
    ids = {"a#p0", "b#c1"}
    got = parse_verdict('{"verdict": "supported", "evidence_ids": ["a#p0", "zzz"]}', ids)
    assert got.label == "supported" and got.evidence_ids == ["a#p0"]
    assert parse_verdict("Not supported.", ids).label == "not supported"
    assert parse_verdict("I think it is probably supported by the text", ids).label == UNPARSABLE
    assert parse_verdict('{"verdict": "maybe"}', ids).label == UNPARSABLE
