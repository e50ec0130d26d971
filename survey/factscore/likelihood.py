"""`LikelihoodJudge`: does the evidence make the claim's every token predictable?

A 135M chat model cannot answer "supported?" reliably: its True/False log-probabilities barely move when a
claim is negated (docs/factscore.md has the measurements). What even a small LM does well is copy from its
context: given a passage that states the claim, each token of the claim is likely; a negation or a changed
number is a token the passage does not predict. So the judge reads, for each passage, the log-probability
of every claim token after `Evidence: <passage> ... states:` and takes the worst token (the first
`SKIP_TOKENS` are skipped: where a sentence starts is uncertain even when its content is given). The claim is
supported when its best passage's worst token is above `threshold`. This is FActScore's nonparametric
("NP") idea in its simplest form, and it inherits its limit: it rewards claims that stay close to the
evidence's wording and is harsh on fair paraphrases.

`TokenScorer` is the seam: `EngineScorer` drives `engine.Engine` through its public `LogitsProcessor`
hook (teacher forcing: each step records the target token's log-probability and forces that token), one
decode step per claim token; `HFScorer` reads all claim tokens from one transformers forward pass, which is
several times faster on a CPU (the same weights: the GGUF file is dequantized by transformers).
"""
from __future__ import annotations

from typing import Any, Protocol

from survey.factscore.evidence import Passage
from survey.factscore.judge import Judgement
from survey.factscore.schemas import NOT_SUPPORTED, SUPPORTED

EVIDENCE_PREFIX = "Evidence ({title}): {text}\nA sentence that the evidence states:"
SKIP_TOKENS = 2
THRESHOLD = -5.0  # worst-token log-prob; calibrated on corpus abstracts (docs/factscore.md, "Calibration")


class TokenScorer(Protocol):
    """Per-token log-probabilities of `continuation` after `prefix` under a causal LM."""

    name: str

    def continuation_logprobs(self, prefix: str, continuation: str) -> list[float]: ...


class _Forcer:
    """A LogitsProcessor that records log p(target) at each step and then forces the target token."""

    def __init__(self, targets: list[int]):
        self.targets, self.logprobs = targets, []

    def __call__(self, generated: list[int], logits):
        import torch

        target = self.targets[len(generated)]
        self.logprobs.append(float(torch.log_softmax(logits.float(), -1)[target]))
        forced = torch.full_like(logits, float("-inf"))
        forced[target] = 0.0
        return forced


class EngineScorer:
    """`TokenScorer` over an `engine.Engine` (greedy decoding with a forcing processor)."""

    def __init__(self, engine: Any, name: str = "engine"):
        self.engine, self.name = engine, name

    def continuation_logprobs(self, prefix: str, continuation: str) -> list[float]:
        from engine import SamplingParams

        tok = self.engine.tokenizer
        prefix_ids = tok.encode(prefix, add_special_tokens=False)
        targets = tok.encode(continuation, add_special_tokens=False)
        if not targets:
            return []
        forcer = _Forcer(targets)
        # EOS ids would end generation early; the claim never contains them, and the forcer never picks them
        self.engine.generate(prefix_ids, SamplingParams(max_tokens=len(targets), temperature=0.0,
                                                        logits_processors=[forcer]))
        return forcer.logprobs


class HFScorer:
    """`TokenScorer` over a transformers causal LM loaded from a local path (a GGUF file or an HF folder)."""

    def __init__(self, path: str, name: str = "hf"):
        import torch
        from pathlib import Path
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where = Path(path)
        kwargs = {"gguf_file": where.name} if where.suffix == ".gguf" else {}
        folder = where.parent if kwargs else where
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
        self.name = name

    def continuation_logprobs(self, prefix: str, continuation: str) -> list[float]:
        import torch

        prefix_ids = self.tokenizer.encode(prefix, add_special_tokens=False)
        targets = self.tokenizer.encode(continuation, add_special_tokens=False)
        if not targets:
            return []
        ids = torch.tensor([prefix_ids + targets])
        with torch.inference_mode():
            logits = self.model(ids).logits[0, len(prefix_ids) - 1:-1].float()  # [T, V]: rows predict targets
        picked = torch.log_softmax(logits, -1).gather(1, torch.tensor(targets)[:, None])[:, 0]
        return [float(x) for x in picked]


def worst_token(logprobs: list[float], skip: int = SKIP_TOKENS) -> float:
    tail = logprobs[skip:] if len(logprobs) > skip else logprobs
    return min(tail) if tail else float("-inf")


class LikelihoodJudge:
    """Supported when, for some passage, no claim token is less likely than exp(threshold)."""

    def __init__(self, scorer: TokenScorer, threshold: float = THRESHOLD, skip: int = SKIP_TOKENS):
        self.scorer, self.threshold, self.skip = scorer, threshold, skip
        self.name = f"likelihood:{scorer.name}:{threshold}:{skip}"
        self._memo: dict[tuple[str, str, str], float] = {}  # the second stage re-reads the cited passages

    def passage_score(self, claim: str, passage: Passage) -> float:
        key = (claim, passage.id, passage.text)
        if key not in self._memo:
            prefix = EVIDENCE_PREFIX.format(title=passage.title, text=passage.text)
            self._memo[key] = worst_token(self.scorer.continuation_logprobs(prefix, " " + claim), self.skip)
        return self._memo[key]

    def judge(self, claim: str, passages: list[Passage]) -> Judgement:
        if not passages:
            return Judgement(NOT_SUPPORTED, [], {"reason": "no evidence"})
        scores = {p.id: round(self.passage_score(claim, p), 3) for p in passages}
        best = max(scores, key=scores.get)
        label = SUPPORTED if scores[best] >= self.threshold else NOT_SUPPORTED
        return Judgement(label, [best] if label == SUPPORTED else [],
                         {"worst_token_logprob": scores, "threshold": self.threshold})
