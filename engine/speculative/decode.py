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

from engine.detok import TextTracker
from engine.model import StepContext
from engine.runner import PREFILL_CHUNK
from engine.sampling import Sampler, SamplingParams
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
                "acceptance_rate": round(self.acceptance_rate, 3)}


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
        ctx = StepContext(slice(row, row + 1), s, None, e, mask, True, runner.cos[None, s:e], runner.sin[None, s:e],
                          runner.attn)
        out.append(engine.model.hidden(tokens[:, s:e], ctx, engine.cache, last_only=False)[0])
    return torch.cat(out)


def speculative_stream(engine, ids: list[int], params: SamplingParams, drafter: Drafter,
                       name: str = "") -> Iterator:
    from engine.engine import GenerationResult, StreamChunk

    stops = engine.eos_ids | set(params.stop_token_ids)
    budget = min(params.max_tokens, engine.max_seq_len - len(ids))
    sampler, text = Sampler(params, ids, engine.device), TextTracker(engine.tokenizer, params.stop)
    stats = SpecStats(name or type(drafter).__name__)
    gen: list[int] = []
    state = {"reason": "length", "last": None}

    def emit(tok: int) -> tuple[StreamChunk | None, bool]:
        """Record one target token; (chunk to yield or None, generation finished)."""
        gen.append(tok)
        if tok in stops:
            state["reason"], state["last"] = "stop", tok
            return None, True
        piece = text.push(tok)
        chunk = StreamChunk(piece, tok, None) if piece or not text.stopped else None
        if text.stopped:
            state["reason"] = "stop"
            return chunk, True
        return chunk, len(gen) >= budget

    t0 = time.perf_counter()
    hidden = prefill_hidden(engine, ids)
    logits = engine.model.logits(hidden[-1])
    t1 = time.perf_counter()
    root = sampler(logits)
    chunk, done = emit(root)
    if chunk:
        yield chunk
    if not done:
        d0 = time.perf_counter()
        drafter.start(ids, hidden, root)
        stats.draft_s += time.perf_counter() - d0
    committed = len(ids)  # tokens in the cache; the root goes to slot `committed`
    uses_hidden = getattr(drafter, "uses_hidden", True)
    while not done:
        d0 = time.perf_counter()
        draft = drafter.propose(params)
        if draft.tokens.device.type != "cpu":  # one device->host read serves pruning, masks and acceptance
            tp = torch.stack([draft.tokens, draft.parents]).cpu()
            draft = Draft(tp[0], tp[1], draft.q)
        draft = prune(draft, engine.max_seq_len - committed - 1, budget - len(gen) - 1)
        if params.logits_processors:  # cut what a grammar forbids before the target pays for it
            n_before = len(draft.tokens)
            draft = filter_draft(draft, params.logits_processors, sampler.generated)
            stats.filtered += n_before - len(draft.tokens)
        d1 = time.perf_counter()
        picks = None
        if len(draft.tokens) or uses_hidden:
            h, logits, picks = forward_tree(engine, root, draft, committed, picks=True)
        else:  # nothing drafted and nobody reads hidden states: the plain decode step (CUDA graph on GPU)
            h, logits = None, engine.runner.decode_one(root, committed)
        verdict = accept(draft, logits, sampler, stops, picks)
        compact(engine.cache, committed, verdict.accepted)
        d2 = time.perf_counter()
        stats.steps, stats.drafted, stats.accepted = stats.steps + 1, stats.drafted + len(draft.tokens), \
            stats.accepted + len(verdict.accepted)
        for tok in verdict.tokens:
            chunk, done = emit(tok)
            if chunk:
                yield chunk
            if done:
                break
        committed += 1 + len(verdict.accepted)
        root = verdict.tokens[-1]
        stats.draft_s, stats.verify_s = stats.draft_s + d1 - d0, stats.verify_s + d2 - d1
        if not done:
            c0 = time.perf_counter()
            hidden = None
            if uses_hidden:
                hidden = h[torch.tensor([0] + [a + 1 for a in verdict.accepted], device=h.device)]
            drafter.commit(verdict.tokens, hidden)
            stats.draft_s += time.perf_counter() - c0
    t2 = time.perf_counter()
    tail = text.finish()
    result = GenerationResult(text.text, gen, state["reason"], len(ids), len(gen), t1 - t0, t2 - t1, spec=stats)
    yield StreamChunk(tail, state["last"], result)
