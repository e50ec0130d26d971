"""tool_choice "auto" as a constrained decision at the first token: an answer, or a call under the call grammar.

Left to free text, SmolLM2-135M never opened `<tool_call>` for "What time is it now in Tokyo?" (it made a time
up), and when it did open one, nothing held the rest to the schema. Here the first token of the reply is the
decision:
- the tokens that can start a call (those the forced-call grammar allows first: `<`, `<tool`, ...) get
  `CALL_BIAS` added, and the sampler picks among them and the answer tokens as usual (greedy: the larger);
- a call token chosen: every later token is decoded under the forced-call grammar (the name one of the tools,
  the arguments valid for its bounded schema, the call closed), so a started call is always a parsed call;
- an answer token chosen: the answer grammar (free text; a `<tool_call>` written later is still held to the
  schemas by xgrammar's triggered tags), and the answer cannot begin with a call marker it does not finish.
With reasoning (`--think`) the decision is taken at the first token after the reasoning block.

The bias is a prior for calling plus what the question says about it: CALL_BIAS + NAME_PMI_WEIGHT * the best
tool name's pointwise mutual information with the question (agents.chat.choose.name_pmi; the runner sets it
per request). The first-token margin alone separated BFCL cases that need a call from irrelevance poorly
(medians -2.1 / -4.5, wide overlap); the name PMI separates them better (irrelevance -5 or lower), and the two
together best. Both numbers are fitted on 45 BFCL cases and checked on held-out ones (docs/benchmarks.md).
"""
from __future__ import annotations

import torch

# Logit added to the call-start tokens at the decision: CALL_BIAS + NAME_PMI_WEIGHT * name PMI where the runner
# measured the PMI, PLAIN_CALL_BIAS where it did not (reasoning first, no constrained choice). Fitted on BFCL
# simple_python/multiple (cases that need a call) against irrelevance (cases that need none) with
# SmolLM2-135M-Instruct, 15 cases each: 24/30 calls, 2/15 false calls (docs/benchmarks.md).
CALL_BIAS = 6.0
NAME_PMI_WEIGHT = 0.5
PLAIN_CALL_BIAS = 3.5  # the earlier first-token-only calibration (23/30, 3/15 on the same cases)


class ToolDecision:
    """The engine `LogitsProcessor` for tool_choice "auto" (also a speculative `DraftChecker`).

    `answer` and `call` are GrammarLogitsProcessors (agents.chat.grammar): the triggered-tag grammar and the
    forced-call grammar. `mode` is None until the first token is known, then "call" or "answer".
    """

    def __init__(self, answer, call, bias: float = PLAIN_CALL_BIAS):
        self.answer = answer
        self.call = call
        self.bias = bias
        self.name_pmi: float | None = None  # set by `inform` when the runner scored the tool names
        self.vocab_size = answer.vocab_size
        self.mode: str | None = None
        self._call_start: torch.Tensor | None = None  # bool [vocab]: tokens that start a call
        self.margin: float | None = None  # best call-start logit minus best answer logit at the decision

    def inform(self, name_pmi: float) -> None:
        """Take the question's pull toward a call into the bias (before the first token)."""
        self.name_pmi = name_pmi
        self.bias = CALL_BIAS + NAME_PMI_WEIGHT * name_pmi

    @property
    def active(self):
        return self.call if self.mode == "call" else self.answer

    @property
    def matcher(self):
        """The active grammar's matcher; before the decision, one that takes a call marker as the decision
        for a call (EngineRunner's think-then-call accepts `<tool_call>` when the reasoning stopped there)."""
        return self.active.matcher if self.mode is not None else _Undecided(self)

    @property
    def finished(self) -> bool:
        return self.active.finished

    @property
    def rejected_token(self) -> int | None:
        return self.active.rejected_token

    def call_start_mask(self) -> torch.Tensor:
        """Which tokens the forced-call grammar allows first (computed once, before the call matcher moves)."""
        if self._call_start is None:
            row = self.call(list(), torch.zeros(self.vocab_size))
            self._call_start = torch.isfinite(row)
        return self._call_start

    def _decide(self, generated: list[int]) -> None:
        if self.mode is None and generated:
            starts_call = bool(self.call_start_mask()[int(generated[0])]) if generated[0] < self.vocab_size else False
            self.mode = "call" if starts_call else "answer"

    def __call__(self, generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        self._decide(generated)
        if self.mode is not None:
            return self.active(generated, logits)
        calls = self.call_start_mask().to(logits.device)
        logits = self.answer(generated, logits)  # free text: nothing masked but what the answer grammar forbids
        view = logits.view(-1)
        n = min(view.numel(), calls.numel())
        others = torch.where(calls[:n], float("-inf"), view[:n])
        # How much the model itself prefers a call (logits, before the bias): kept for calibration.
        self.margin = float(torch.where(calls[:n], view[:n], float("-inf")).max() - others.max())
        view[:n] = torch.where(calls[:n], view[:n] + self.bias, view[:n])
        return logits

    def draft_prefix_ok(self, generated: list[int], tokens: list[int]) -> int:
        """DraftChecker: the path is judged by the grammar its first token (or the decision made) selects."""
        self._decide(generated)
        if self.mode is not None:
            return self.active.draft_prefix_ok(generated, tokens)
        if not tokens:
            return 0
        first = int(tokens[0])
        starts_call = first < self.vocab_size and bool(self.call_start_mask()[first])
        return (self.call if starts_call else self.answer).draft_prefix_ok(generated, tokens)


class _Undecided:
    """The matcher view of an undecided ToolDecision: no text is forced yet; accepting text that starts a call
    decides for the call (the text goes to the call grammar), any other text to the answer grammar."""

    def __init__(self, decision: ToolDecision):
        self.decision = decision

    def find_jump_forward_string(self) -> str:
        return self.decision.active.matcher.find_jump_forward_string()

    def is_terminated(self) -> bool:
        return self.decision.mode is not None and self.decision.active.matcher.is_terminated()

    def accept_string(self, text: str) -> bool:
        d = self.decision
        if d.mode is not None:
            return d.active.matcher.accept_string(text)
        d.call_start_mask()
        if d.call.matcher.accept_string(text):
            d.mode = "call"
            return True
        if d.answer.matcher.accept_string(text):
            d.mode = "answer"
            return True
        return False
