"""FactScore with the real default model (smollm2-135m) as judge, on texts built from corpus abstracts.

Asserted: ordering and gaps, not exact values. The likelihood judge reads the model's token log-probs
(transformers over the same GGUF weights: one forward pass per passage, the fast path on CPU). The chat
judge's limits are recorded in docs/factscore.md, not asserted here: a 135M model answers "supported" to
nearly everything.
"""
import pytest

from survey.factscore import FactScoreConfig, evaluate
from survey.factscore.evidence import passages_of
from survey.factscore.likelihood import HFScorer, LikelihoodJudge

SENTENCES = FactScoreConfig(extract_with_model=False, k=1, per_doc=1, model_name="smollm2-135m")


@pytest.fixture(scope="module")
def judge(smollm2_path):
    return LikelihoodJudge(HFScorer(str(smollm2_path), "hf:smollm2-135m"))


def test_factscore_model_copied_beats_altered_claim(judge, fs_papers):
    doc, copied, altered = fs_papers[0]
    passage = max(passages_of(doc), key=lambda p: copied[:40] in p.text)
    assert judge.passage_score(copied, passage) > judge.passage_score(altered, passage) + 1.0
    assert judge.judge(copied, [passage]).label == "supported"


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~16 passage scorings: minutes on 2 free cores, far longer on a shared machine
def test_factscore_model_three_texts(judge, fs_texts, fs_index):
    """Copied sentences score high; negated/changed numbers clearly lower; wrong citations: low precision."""
    reports = {name: evaluate(text, llm=None, index=fs_index, judge=judge, config=SENTENCES)
               for name, text in fs_texts.items()}
    faithful, altered, wrong = reports["faithful"], reports["altered"], reports["wrong_cites"]
    for name, r in reports.items():  # shown with -s: the margins behind the verdicts
        print(name, r["factscore"], r["citation_precision"],
              [c["judge_detail"].get("worst_token_logprob") for c in r["claims"]])
    assert faithful["factscore"] >= 0.75 and faithful["citation_precision"] >= 0.75
    assert faithful["factscore"] - altered["factscore"] >= 0.5
    assert faithful["citation_precision"] - wrong["citation_precision"] >= 0.5
    assert wrong["citation_precision"] <= 0.25


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_factscore_model_extracts_or_falls_back(fs_papers, smollm2_path):
    """The chat model's claims are kept only when drawn from the sentence; either way, markers survive."""
    from agents.chat.engine_chat import ChatEngine
    from survey.factscore.claims import extract
    from survey.factscore.sentences import split_sentences

    llm = ChatEngine.from_model(str(smollm2_path), device="cpu", max_tokens=96, temperature=0.0, seed=0)
    _, copied, _ = fs_papers[1]
    sentence = split_sentences("S", f"{copied[:-1]} [1].")[0]
    claims, raw = extract(llm, sentence)
    assert claims and all(c.citations == [1] for c in claims)
    assert {c.method for c in claims} <= {"model", "sentence"}
    if claims[0].method == "model":
        assert raw and len(claims) <= len(raw)
