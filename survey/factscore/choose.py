"""Which judge a FactScore run uses, as `cpm eval factscore --judge/--scorer/--threshold` and the TUI choose it.

auto = the embedding judge (MiniLM similarity to a span of the evidence plus exact number and negation checks;
no language model): chosen by measurement over faithful / paraphrased / negated / number-changed /
wrong-citation variants of corpus sentences (`cpm bench factscore_calibration`, docs/factscore.md), where it
is both the most accurate and the fastest with the 135M default model. likelihood = token log-probabilities
of the claim given the evidence (engine, or on CPU transformers reading the same GGUF file); chat = the model
answers supported / not supported (for large models and remote backends); lexical = word coverage.
"""
from __future__ import annotations

from survey.errors import SurveyError

JUDGES = ("auto", "embedding", "likelihood", "chat", "lexical")
SCORERS = ("auto", "engine", "hf")


def needs_model(choice: str) -> bool:
    """Whether the judge `choice` reads a chat model (the embedding and lexical judges do not)."""
    return choice in ("likelihood", "chat")


def choose_judge(choice: str, llm, name: str, scorer: str = "auto", threshold: float | None = None):
    """The judge for `choice` over the built chat model `llm` (named `name`; `llm` may be None for the
    judges that need no model)."""
    from survey.factscore import ChatJudge, LexicalJudge
    from survey.factscore.likelihood import THRESHOLD, LikelihoodJudge

    if choice not in JUDGES:
        raise SurveyError(f"unknown judge {choice!r}: use one of {', '.join(JUDGES)}")
    engine = getattr(llm, "engine", None)
    if choice == "auto":
        choice = "embedding"
    if choice == "lexical":
        return LexicalJudge()
    if choice == "embedding":
        return embedding_judge(threshold)
    if llm is None:
        raise SurveyError(f"the {choice} judge needs a chat model")
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


def embedding_judge(threshold: float | None = None, embedder: str = "minilm"):
    """The embedding judge over retrieval's sentence-transformers model (the one the index loaded: same
    process, same cached model object)."""
    from retrieval.embed import Embedder
    from survey.factscore.embedding import THRESHOLD, EmbeddingJudge

    return EmbeddingJudge(Embedder(embedder), THRESHOLD if threshold is None else threshold)
