"""Which tool the first call names, and how much the question favours calling: both read from the model's own
likelihoods (agents.chat.scoring), never from keywords.

- **The tool**: greedy decoding under the grammar chose by the first token of a name (SmolLM2-135M named the
  right tool in 19 of BFCL `multiple` cases 0-23). Here each tool gets two scores from the model: the name's
  probability as the call's name, log p(name" | prompt, `<tool_call>\n{"name": "`), and the noisy channel
  (Min et al. 2022), log p(question | the prompt rendered with that tool alone): how well the tool explains the
  question. The call names the tool with the best name score + CHANNEL_WEIGHT * channel score. Over BFCL
  `multiple` cases 0-59: the name score alone chose right in 48, the channel alone in 55, both (0.5) in 57; the
  channel alone prefers a tool with a longer description (mcp-server-time's convert_time, whose schema names
  'Asia/Tokyo', for "What time is it now in Tokyo?"), which the name score outweighs (docs/benchmarks.md).
- **The question's pull toward a call** (tool_choice auto): the pointwise mutual information of a tool name with
  the question, log p(name | question) - log p(name | a question that says nothing), the best over the tools.
  A question that the tools answer makes a name more likely; an unrelated one makes it less so (BFCL
  irrelevance: -5 or lower on every calibration case). agents.chat.decision adds it, weighted, to the call
  prior.
"""
from __future__ import annotations

from agents.chat.scoring import best_alternative, common_prefix, pair_logprobs

# The question with no content, for a name's prior (the PMI's second term).
NULL_QUESTION = "Call one of the functions."
# Weight of the channel score beside the name score (chosen on BFCL multiple 0-59 and the time server's two tools).
CHANNEL_WEIGHT = 0.5


def name_candidates(names: list[str]) -> list[str]:
    """The text each name is scored as: the name and its closing quote, so a name is not scored as a prefix of
    a longer one."""
    return [f'{name}"' for name in names]


def name_scores(engine, prompt: str, names: list[str]) -> list[float]:
    """log p(name" | prompt) for each name; `prompt` ends with the call head."""
    return best_alternative(engine, engine.tokenizer, prompt, name_candidates(names))[1]


def name_pmi(engine, scores: list[float], null_prompt: str, names: list[str]) -> float:
    """max over `names` of their `scores` (name_scores with the question) minus log p(name | null_prompt)."""
    prior = name_scores(engine, null_prompt, names)
    return max(s - p for s, p in zip(scores, prior))


def choose_tool(engine, scores: list[float], prompts: dict[str, str], question: str) -> tuple[str, dict[str, float]]:
    """The tool the call names: best name score (`scores`, in the order of `prompts`) + CHANNEL_WEIGHT * channel
    score; with every tool's total. Without a channel score (question not found) the name score decides."""
    _, channel = channel_choice(engine, prompts, question)
    total = {name: s + CHANNEL_WEIGHT * channel.get(name, 0.0) for name, s in zip(prompts, scores)}
    return max(total, key=total.__getitem__), total


def channel_choice(engine, prompts: dict[str, str], question: str) -> tuple[str | None, dict[str, float]]:
    """The name whose prompt (rendered with that tool alone, ending with its user turn) makes `question` most
    likely, with every name's log p(question | tool); (None, {}) when the question is not found in a prompt."""
    tok = engine.tokenizer
    pairs = []
    for prompt in prompts.values():
        at = prompt.rfind(question) if question else -1
        if at < 0:
            return None, {}
        base = tok.encode(prompt[:at], add_special_tokens=False)
        joined = tok.encode(prompt[:at] + question, add_special_tokens=False)
        shared = common_prefix(base, joined)
        pairs.append((joined[:shared], joined[shared:]))
    scores = {name: sum(lps) for name, lps in zip(prompts, pair_logprobs(engine, pairs))}
    return max(scores, key=scores.__getitem__), scores
