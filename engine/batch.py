"""Batched generation: prefill each prompt into its own cache row, then decode all rows in one pass per step.

Rows of different lengths decode together: each writes at its own position and masks the rest (see
Runner.decode_batch). A finished row keeps being fed its last token until the group ends; its outputs are
ignored, which costs a little compute and keeps the step shapes fixed.
"""
from __future__ import annotations

import time

import torch

from engine.detok import TextTracker
from engine.sampling import Sampler, SamplingParams


def run_batch(engine, prompts: list[list[int]], params: SamplingParams) -> list:
    from engine.engine import GenerationResult

    B, runner, dev = len(prompts), engine.runner, engine.device
    stops = engine.eos_ids | set(params.stop_token_ids)
    samplers = [Sampler(params, ids, dev) for ids in prompts]
    texts = [TextTracker(engine.tokenizer, params.stop) for _ in prompts]
    budgets = [min(params.max_tokens, engine.max_seq_len - len(ids)) for ids in prompts]
    reasons: list[str | None] = [None] * B
    t0 = time.perf_counter()
    logits = torch.cat([runner.prefill(ids, row=b) for b, ids in enumerate(prompts)])  # [B, V]
    t1 = time.perf_counter()
    # positions and last tokens live on the host and go to the device once per step; plain greedy reads all
    # rows' argmaxes in one copy (a per-row sampler call would sync once per row)
    pos = [len(ids) for ids in prompts]
    last = [0] * B
    fast = params.temperature == 0 and params.repetition_penalty == 1.0 and not params.logits_processors
    while True:
        picks = logits.argmax(-1).tolist() if fast else None
        for b in range(B):
            if reasons[b] is not None:
                continue
            if picks is None:
                tok = samplers[b](logits[b])
            else:
                tok = picks[b]
                samplers[b].record(tok)
            last[b] = tok
            if tok in stops:
                reasons[b] = "stop"
                continue
            texts[b].push(tok)
            if texts[b].stopped:
                reasons[b] = "stop"
            elif len(samplers[b].generated) >= budgets[b]:
                reasons[b] = "length"
        if all(r is not None for r in reasons):
            break
        logits = runner.decode_batch(torch.tensor(last, device=dev), torch.tensor(pos, device=dev))
        # finished rows stay put (they rewrite their own last slot); live rows advance
        pos = [p + (r is None) for p, r in zip(pos, reasons)]
    t2 = time.perf_counter()
    out = []
    for b in range(B):
        texts[b].finish()
        gen = samplers[b].generated
        out.append(GenerationResult(texts[b].text, gen, reasons[b], len(prompts[b]), len(gen), t1 - t0, t2 - t1))
    return out
