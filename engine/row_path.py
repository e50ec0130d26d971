"""Requests that run on the contiguous cache rows instead of the paged pool, to the end, while the scheduler's
sequences wait: speculative requests (tree verification and its CUDA graphs read a row) and every request of an
engine with an attention backend (InfLLM v2's compressed-key cache and sparse kernels read rows).
docs/decisions.md says why and what it costs. One sequence runs as before the scheduler existed (CUDA graphs, greedy picks read a
chunk at a time); a group of up to max_batch decodes in one batched pass per step, each row with its own
sampling settings, stops and grammar.
"""
from __future__ import annotations

from typing import Iterator

import torch

from engine.sequence import Sequence


def row_steps(engine, seqs: list[Sequence]) -> Iterator[None]:
    """Run `seqs` to the end; yields between steps (the loop checks for cancellation there)."""
    if seqs[0].params.spec != "none":
        from engine.speculative import make_drafter
        from engine.speculative.decode import speculative_steps

        seq = seqs[0]
        yield from speculative_steps(engine, seq, make_drafter(engine, seq.params.spec), seq.params.spec)
    elif len(seqs) == 1:
        yield from _one(engine, seqs[0])
    else:
        yield from _group(engine, seqs)


def _one(engine, seq: Sequence) -> Iterator[None]:
    runner, pos = engine.runner, seq.num_tokens
    seq.started()
    logits = runner.prefill(seq.token_ids, row=0)
    tok = seq.sample(logits[0])
    if seq.append(tok):
        return
    if seq.plain_greedy:  # the picks come from the device (graph replays back to back, read a chunk at a time)
        chunks = runner.greedy_chunks(tok, pos, seq.budget - 1)
        try:
            for chunk in chunks:
                for tok in chunk:
                    seq.sampler.record(tok)
                    if seq.append(tok):
                        return
                yield
        finally:
            chunks.close()  # steps in flight past the stop are dropped
        return
    while True:
        yield
        logits = runner.decode_one(tok, pos)
        pos += 1
        tok = seq.sample(logits[0])
        if seq.append(tok):
            return


def _group(engine, seqs: list[Sequence]) -> Iterator[None]:
    """Prefill each sequence into its own row, then decode all rows in one pass per step. A finished row keeps
    being fed its last token until the group ends; its outputs are ignored (fixed step shapes)."""
    runner, dev = engine.runner, engine.device
    for seq in seqs:
        seq.started()
    logits = torch.cat([runner.prefill(seq.token_ids, row=b) for b, seq in enumerate(seqs)])  # [B, V]
    pos = [seq.num_tokens for seq in seqs]
    last = [0] * len(seqs)
    while True:
        for b, seq in enumerate(seqs):
            if not seq.finished:
                last[b] = seq.sample(logits[b])
                seq.append(last[b])
        if all(seq.finished for seq in seqs):
            return
        yield
        logits = runner.decode_batch(torch.tensor(last, device=dev), torch.tensor(pos, device=dev))
        pos = [p + (not seq.finished) for p, seq in zip(pos, seqs)]
