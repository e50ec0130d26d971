"""The default (embedding) judge with the real MiniLM embedder on real corpus sentences and their variants."""
import pytest

from survey.factscore.choose import choose_judge
from survey.factscore.evidence import cited_passages
from survey.factscore.perturb import paraphrase
from survey.factscore.schemas import NOT_SUPPORTED, SUPPORTED


@pytest.fixture(scope="module")
def judge(minilm_path):
    return choose_judge("auto", None, "none")


def test_factscore_auto_is_the_embedding_judge(judge):
    assert judge.name.startswith("embedding:") and judge.name.endswith(":checks")


def test_factscore_embedding_judge_separates_the_variants(judge, fs_papers):
    docs = [d for d, _, _ in fs_papers]
    for i, (doc, copied, altered) in enumerate(fs_papers):
        own = cited_passages(copied, [doc], 2)
        other = cited_passages(copied, [docs[(i + 1) % len(docs)]], 2)
        assert judge.judge(copied, own).label == SUPPORTED, copied
        assert judge.judge(altered, cited_passages(altered, [doc], 2)).label == NOT_SUPPORTED, altered
        assert judge.judge(copied, other).label == NOT_SUPPORTED, copied
        reworded = paraphrase(copied)
        if reworded:
            assert judge.judge(reworded, cited_passages(reworded, [doc], 2)).label == SUPPORTED, reworded


def test_factscore_embedding_judge_accepts_the_writers_sentence_about_a_record(judge, fs_papers):
    doc = fs_papers[0][0]
    surname = doc.authors.split(",")[0].split()[-1]
    claim = f'{surname} et al. ({doc.year}) present "{doc.title}".'
    judgement = judge.judge(claim, cited_passages(claim, [doc], 2))
    assert judgement.label == SUPPORTED and judgement.evidence_ids == [f"{doc.id}#r"]


def test_factscore_embedding_judge_many_equals_one_by_one(judge, fs_papers):
    items = [(altered if i % 2 else copied, cited_passages(copied, [doc], 2))
             for i, (doc, copied, altered) in enumerate(fs_papers)]
    assert [j.label for j in judge.judge_many(items)] == [judge.judge(c, p).label for c, p in items]
