"""Which judge a FactScore run uses, as `cpm eval factscore --judge/--scorer/--threshold` and the TUI choose it.

auto = the likelihood judge when the chat model has an in-process engine (token log-probabilities; on CPU read
by transformers from the same GGUF file, one forward pass instead of one engine step a token), else the chat
judge (a remote backend has no log-probabilities here).
"""
from __future__ import annotations

from survey.errors import SurveyError

JUDGES = ("auto", "likelihood", "chat", "lexical")
SCORERS = ("auto", "engine", "hf")


def choose_judge(choice: str, llm, name: str, scorer: str = "auto", threshold: float | None = None):
    """The judge for `choice` over the built chat model `llm` (named `name`)."""
    from survey.factscore import ChatJudge, LexicalJudge
    from survey.factscore.likelihood import THRESHOLD, LikelihoodJudge

    if choice not in JUDGES:
        raise SurveyError(f"unknown judge {choice!r}: use one of {', '.join(JUDGES)}")
    engine = getattr(llm, "engine", None)
    if choice == "auto":
        choice = "likelihood" if engine is not None else "chat"
    if choice == "lexical":
        return LexicalJudge()
    if choice == "chat":
        return ChatJudge(llm, name)
    if engine is None:
        raise SurveyError("the likelihood judge needs the in-process engine (--backend engine); "
                          "use the chat judge with a remote backend")
    return LikelihoodJudge(_scorer(scorer, engine, name), THRESHOLD if threshold is None else threshold)


def _scorer(choice: str, engine, name: str):
    from survey.factscore.likelihood import EngineScorer, HFScorer

    if choice not in SCORERS:
        raise SurveyError(f"unknown scorer {choice!r}: use one of {', '.join(SCORERS)}")
    if choice == "auto":
        choice = "hf" if str(engine.device) == "cpu" and str(engine.path).endswith(".gguf") else "engine"
    if choice == "hf":  # the same weights file the engine loaded, read by transformers
        return HFScorer(str(engine.path), f"hf:{name}")
    return EngineScorer(engine, f"engine:{name}")
