"""The speculative generation loop: prefill, then draft -> verify -> accept -> compact until done.

Yields the same StreamChunks and GenerationResult as Engine.stream (stop tokens, stop strings, max_tokens,
the context limit), plus SpecStats on the result. Every emitted token is chosen by the target at its own
position with the request's penalties, logits processors and sampler, so the output is the target's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch

from engine.runner import PREFILL_CHUNK
from engine.sampling import SamplingParams
from engine.speculative.constrain import filter_draft
from engine.speculative.drafter import Draft, Drafter
from engine.speculative.verify import accept, compact, forward_tree, prune


@dataclass
class SpecStats:
    drafter: str
    steps: int = 0  # verification forward passes
    drafted: int = 0  # draft tokens sent to verification
    accepted: int = 0  # draft tokens kept
    filtered: int = 0  # draft tokens dropped before verification because a constraint forbids them
    draft_s: float = 0.0  # time in drafter.propose / commit
    verify_s: float = 0.0  # time in the target's verification passes and acceptance
    auto: object | None = None  # the request's AutoPolicy under spec="auto" (its decisions, engine/speculative/auto.py)

    @property
    def mean_accepted_length(self) -> float:
        """Tokens produced per verification pass, bonus token included (EAGLE's tau); 1.0 = no gain."""
        return (self.accepted + self.steps) / self.steps if self.steps else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def as_dict(self) -> dict:
        return {"drafter": self.drafter, "steps": self.steps, "drafted": self.drafted, "accepted": self.accepted,
                "filtered": self.filtered,
                "mean_accepted_length": round(self.mean_accepted_length, 3),
                "acceptance_rate": round(self.acceptance_rate, 3)} | \
            ({"auto": self.auto.stats.as_dict(self.auto)} if self.auto is not None else {})


def prefill_hidden(engine, ids: list[int], row: int = 0) -> torch.Tensor:
    """The prompt through the target in chunks (as Runner.prefill) -> post-norm hidden states [T, H]."""
    runner, dev = engine.runner, engine.device
    tokens = torch.tensor([ids], dtype=torch.long, device=dev)
    out = []
    for s in range(0, len(ids), PREFILL_CHUNK):
        e = min(s + PREFILL_CHUNK, len(ids))
        mask = None
        if s > 0:
            q_pos = torch.arange(s, e, device=dev)[:, None]
            mask = (torch.arange(e, device=dev)[None, :] <= q_pos)[None, None]
        ctx = runner.context(rows=slice(row, row + 1), start=s, kv_len=e, mask=mask, causal=True,
                             cos=runner.cos[None, s:e], sin=runner.sin[None, s:e])
        out.append(engine.model.hidden(tokens[:, s:e], ctx, engine.cache, last_only=False)[0])
    return torch.cat(out)


def speculative_steps(engine, seq, drafter: Drafter, name: str = "") -> Iterator[None]:
    """Run `seq` (engine/sequence.py) speculatively on cache row 0: prefill, then draft -> verify -> accept ->
    compact. Every kept token goes through seq.append, which streams it and finishes the sequence (stops,
    budget); yields after each verification pass so the caller can stream and check for cancellation. Runs on
    the engine loop's thread (Engine.stream), or the caller's for speculative_stream."""
    params, ids = seq.params, list(seq.token_ids)
    stats = seq.spec = SpecStats(name or type(drafter).__name__)
    seq.started()
    hidden = prefill_hidden(engine, ids)
    logits = engine.model.logits(hidden[-1])
    root = seq.sample(logits)
    if seq.append(root):
        return
    d0 = time.perf_counter()
    drafter.start(ids, hidden, root)
    stats.draft_s += time.perf_counter() - d0
    policy = stats.auto = getattr(drafter, "policy", None)  # spec="auto": how much of each draft to verify
    committed = len(ids)  # tokens in the cache; the root goes to slot `committed`
    uses_hidden = getattr(drafter, "uses_hidden", True)
    while True:
        yield
        d0 = time.perf_counter()
        draft = drafter.propose(params)
        if draft.tokens.device.type != "cpu":  # one device->host read serves pruning, masks and acceptance
            tp = torch.stack([draft.tokens, draft.parents]).cpu()
            draft = Draft(tp[0], tp[1], draft.q)
        draft = prune(draft, engine.max_seq_len - committed - 1, seq.budget - len(seq.generated) - 1)
        if params.logits_processors:  # cut what a grammar forbids before the target pays for it
            n_before = len(draft.tokens)
            draft = filter_draft(draft, params.logits_processors, seq.sampler.generated)
            stats.filtered += n_before - len(draft.tokens)
        if policy is not None:
            draft = policy.plan(draft, len(seq.generated))
        d1 = time.perf_counter()
        picks = None
        if len(draft.tokens) or uses_hidden:
            h, logits, picks = forward_tree(engine, root, draft, committed, picks=True)
        else:  # nothing drafted and nobody reads hidden states: the plain decode step (CUDA graph on GPU)
            h, logits = None, engine.runner.decode_one(root, committed)
        verdict = accept(draft, logits, seq.sampler, seq.stops, picks)
        compact(engine.cache, committed, verdict.accepted)
        d2 = time.perf_counter()
        if policy is not None:
            policy.observe(d2 - d1, len(verdict.accepted), verdict.tokens)
        stats.steps, stats.drafted, stats.accepted = stats.steps + 1, stats.drafted + len(draft.tokens), \
            stats.accepted + len(verdict.accepted)
        stats.draft_s, stats.verify_s = stats.draft_s + d1 - d0, stats.verify_s + d2 - d1
        for tok in verdict.tokens:
            if seq.append(tok):
                return
        committed += 1 + len(verdict.accepted)
        root = verdict.tokens[-1]
        c0 = time.perf_counter()
        hidden = None
        if uses_hidden:
            hidden = h[torch.tensor([0] + [a + 1 for a in verdict.accepted], device=h.device)]
        drafter.commit(verdict.tokens, hidden)
        stats.draft_s += time.perf_counter() - c0


def speculative_stream(engine, ids: list[int], params: SamplingParams, drafter: Drafter,
                       name: str = "") -> Iterator:
    """speculative_steps for a bare prompt, run in the caller's thread, as StreamChunks (the last carries the
    result). The engine's loop must be idle (tests, tools); Engine.stream with params.spec is the shared way."""
    from engine.sequence import Sequence

    seq = Sequence(ids, params, engine.tokenizer, engine.eos_ids, engine.max_seq_len, engine.device)
    with torch.inference_mode():
        for _ in speculative_steps(engine, seq, drafter, name):
            yield from _drain(seq)
    yield from _drain(seq)


def _drain(seq) -> Iterator:
    while not seq.out.empty():
        yield seq.out.get()
