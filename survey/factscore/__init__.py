"""FactScore for surveys: atomic claims, evidence (cited papers first), support judgement, scores.

`evaluate(markdown, llm=..., index=..., judge=...)` is the entry point; see docs/factscore.md.
"""
from survey.factscore.embedding import EmbeddingJudge
from survey.factscore.evaluate import FactScoreConfig, evaluate
from survey.factscore.judge import ChatJudge, Judge, Judgement, LexicalJudge, NLIJudge, NLIModel

__all__ = ["FactScoreConfig", "evaluate", "ChatJudge", "EmbeddingJudge", "LexicalJudge", "NLIJudge", "Judge",
           "Judgement", "NLIModel"]
