"""`spec="auto"`: prompt lookup that verifies a draft only where it is expected to pay, per request and per step.

Speculation pays when the tokens a verification pass yields (1 + the accepted draft tokens) outnumber what
the pass costs in plain decode steps. Both sides are measured online, inside the request:
- cost: an average of the plain step (steps that verify nothing) and of the extra cost of each drafted token
  in a verification pass, in plain steps (`slope`: a pass over k drafted tokens costs 1 + slope * k steps);
- acceptance: the probability that draft depth i is accepted once depth i - 1 was, an average per depth,
  learnt from real verification and, while decoding plain, from the draft it did not verify ("shadow"
  acceptance: prompt lookup's proposal is free, so it is compared with the tokens plain decoding then emits;
  for a deterministic drafter that is exactly the chance verification would have accepted it).
Each step verifies the k of the proposed chain's n tokens that maximise expected tokens per cost, or none
(a plain decode step in the same request) when no k beats plain by `margin`. The cost slope is only learnt
while verifying, so where acceptance says drafting could pay but the slope says it does not, a short probe is
verified after `backoff` declined steps; a probe that does not pay doubles the backoff (up to `max_backoff`),
one that pays resets it. The first probe waits until the declined drafts show it could pay. docs/frspec.md §11 gives the reasons for the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.speculative.constrain import select
from engine.speculative.drafter import Draft
from engine.speculative.prompt_lookup import PromptLookupDrafter


@dataclass
class AutoConfig:
    cost_ema: float = 0.2  # weight of the newest timing in the cost averages (the box's load moves them)
    accept_ema: float = 0.15  # weight of the newest outcome in a depth's acceptance average (smooth: see margin)
    prior_accept: float = 0.5  # a depth's acceptance before any outcome
    margin: float = 1.2  # verify only when expected tokens per cost beat plain by 20%: a noisy estimate is acted on when it is high (docs/frspec.md §11)
    probe_tokens: int = 2  # a probe verifies this many tokens: enough to time a pass, cheap when it is lost
    prior_slope: float = 0.5  # a pass's cost per drafted token (plain steps) before one is timed: the CPU's 0.3-0.6
    backoff: int = 8  # declined steps (with a proposal) before the first probe
    max_backoff: int = 256
    max_log: int = 32  # mode changes kept in the telemetry (counts are always complete)


@dataclass
class AutoStats:
    """What `auto` decided for one request (SpecStats.auto; the request's step telemetry)."""
    plain_steps: int = 0  # steps that verified nothing (no proposal, or declined)
    spec_steps: int = 0  # steps that verified a draft (probes included)
    declined: int = 0  # steps whose proposal was not verified because it was not expected to pay
    probes: int = 0
    plain_s: float = 0.0  # time in plain steps (one token each)
    spec_s: float = 0.0  # time in verifying steps
    spec_tokens: int = 0  # tokens the verifying steps yielded
    switches: list[dict] = field(default_factory=list)  # {"token", "to": "spec"|"plain", "why"}, first max_log

    def as_dict(self, policy: "AutoPolicy") -> dict:
        return {"plain_steps": self.plain_steps, "spec_steps": self.spec_steps, "declined": self.declined,
                "probes": self.probes, "switches": self.switches, "plain_s": round(self.plain_s, 4),
                "spec_s": round(self.spec_s, 4), "spec_tokens": self.spec_tokens,
                "plain_step_ms": None if policy.plain_s is None else round(policy.plain_s * 1e3, 3),
                "verify_cost_per_draft_token": None if policy.slope is None else round(policy.slope, 3),
                "depth_acceptance": [round(a, 3) for a in policy.accept]}


class AutoPolicy:
    """The per-request decision rule (module docstring): plan() before verification, observe() after."""

    def __init__(self, max_depth: int, cfg: AutoConfig | None = None):
        self.cfg = cfg or AutoConfig()
        self.plain_s: float | None = None  # average plain step, seconds
        self.slope: float | None = None  # extra cost per drafted token, in plain steps
        self.accept = [self.cfg.prior_accept] * max_depth  # P(depth i + 1 accepted | depth i accepted)
        self.seen = [0] * max_depth  # outcomes observed per depth
        self.backoff, self.skipped = self.cfg.backoff, 0
        self.mode = "plain"
        # proposals not verified, each (its tokens not yet compared, the draft depth of the first), compared with
        # the tokens emitted next
        self.shadows: list[tuple[list[int], int]] = []
        self.k = 0  # tokens verified by the current step
        self.probing = False
        self.stats = AutoStats()

    def expected_tokens(self, k: int) -> float:
        """Tokens one pass over the first k chain tokens yields on average (1 = plain decoding)."""
        out, reach, last = 1.0, 1.0, self.cfg.prior_accept
        for a, seen in zip(self.accept[:k], self.seen):
            last = a if seen else last  # a depth not observed yet is taken to be like the deepest one observed
            reach *= last
            out += reach
        return out

    def gain(self, k: int, slope: float) -> float:
        """Expected tokens per plain-step cost of verifying k tokens (plain decoding: 1)."""
        return self.expected_tokens(k) / (1.0 + slope * k)

    def best(self, n: int, slope: float) -> tuple[int, float]:
        return max(((k, self.gain(k, slope)) for k in range(1, min(n, len(self.accept)) + 1)), key=lambda x: x[1])

    def plan(self, draft: Draft, generated: int) -> Draft:
        """The part of `draft` (a chain) to verify now; an empty draft means a plain step."""
        n = len(draft.tokens)
        self.k, self.probing = 0, False
        if n and self.plain_s is not None:
            if self.slope is None:  # never verified in this request: a first probe times a pass, once the
                # declined drafts say drafting could pay at half the usual cost (no probe lost on free writing)
                if self.best(n, self.cfg.prior_slope / 2)[1] > self.cfg.margin:
                    self.k, self.probing = min(n, self.cfg.probe_tokens), True
            else:
                k, g = self.best(n, self.slope)
                if g > self.cfg.margin:
                    self.k = k
                elif self.skipped + 1 >= self.backoff and self.best(n, self.slope / 2)[1] > self.cfg.margin:
                    # drafting would pay if a pass were cheaper than measured (the load may have changed): re-time it
                    self.k, self.probing = min(n, self.cfg.probe_tokens), True
        if self.k == 0 and n:
            self.skipped += 1
            self.stats.declined += 1
        self._switch("spec" if self.k else "plain", generated, n)
        tokens = draft.tokens.tolist()
        if self.k == 0 and n:  # every declined proposal is scored against the tokens plain decoding emits next
            self.shadows = self.shadows[-(len(self.accept) - 1):] + [(tokens, 1)]
        elif self.k:  # verification scores depths 1..k; the rest only if all k are accepted
            self.shadows = [(tokens[self.k:], self.k + 1)] if n > self.k else []
        return select(draft, list(range(self.k)))

    def observe(self, verify_s: float, accepted: int, tokens: list[int]) -> None:
        """After the step: its verification time, how many of the k verified tokens were kept, and the tokens
        it emitted (accepted ones, then the target's own)."""
        c, k = self.cfg, self.k
        if k == 0:
            self.stats.plain_steps += 1
            self.stats.plain_s += verify_s
            self.plain_s = verify_s if self.plain_s is None else (1 - c.cost_ema) * self.plain_s + c.cost_ema * verify_s
        else:
            self.stats.spec_steps += 1
            self.stats.spec_s += verify_s
            self.stats.spec_tokens += len(tokens)
            self.stats.probes += self.probing
            per_token = max(0.0, (verify_s / self.plain_s - 1.0) / k)
            self.slope = per_token if self.slope is None else (1 - c.cost_ema) * self.slope + c.cost_ema * per_token
            for d in range(min(accepted + 1, k)):  # depths 1..accepted kept, depth accepted + 1 rejected
                self._outcome(d, d < accepted)
            if self.probing:
                paid = (accepted + 1) / (1.0 + per_token * k) >= 1.0
                self.backoff = c.backoff if paid else min(2 * self.backoff, c.max_backoff)
            self.skipped = 0
            if accepted < k:
                self.shadows = []
        for tok in tokens[accepted:] if k == 0 or accepted == k else []:  # tokens no verification scored
            pending = []
            for draft, depth in self.shadows:
                hit = tok == draft[0]
                if depth <= len(self.accept):
                    self._outcome(depth - 1, hit)
                if hit and len(draft) > 1:
                    pending.append((draft[1:], depth + 1))
            self.shadows = pending

    def _outcome(self, depth: int, hit: bool) -> None:
        if not self.seen[depth]:  # start from what the estimate was taken to be (expected_tokens)
            self.accept[depth] = next((self.accept[d] for d in range(depth - 1, -1, -1) if self.seen[d]),
                                      self.cfg.prior_accept)
        a = self.cfg.accept_ema
        self.accept[depth] = (1 - a) * self.accept[depth] + a * float(hit)
        self.seen[depth] += 1

    def _switch(self, mode: str, generated: int, n: int) -> None:
        if mode == self.mode or (mode == "plain" and n == 0):  # an empty proposal is no decision
            return
        self.mode = mode
        if len(self.stats.switches) < self.cfg.max_log:
            why = "probe" if self.probing else (
                f"{self.expected_tokens(self.k):.2f} tokens expected for {1 + (self.slope or 0) * self.k:.2f} steps"
                if mode == "spec" else "drafting did not pay" if self.slope is not None else "timing a plain step")
            self.stats.switches.append({"token": generated, "to": mode, "k": self.k, "why": why})


class AutoDrafter(PromptLookupDrafter):
    """Prompt lookup with an AutoPolicy: speculative_steps asks `policy` how much of each draft to verify."""

    def __init__(self, cfg: AutoConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.policy = AutoPolicy(self.num_tokens, cfg)

    def start(self, prompt_ids: list[int], hidden, root: int) -> None:
        super().start(prompt_ids, hidden, root)
        self.policy = AutoPolicy(self.num_tokens, self.cfg)  # a fresh policy per request
