"""The drafter protocol: what a speculative-decoding drafter gives the verifier and what it is told back.

A drafter proposes a tree of candidate tokens after the current root (the last sampled token, not yet in the
target's KV cache); the target verifies the whole tree in one forward pass and keeps the longest accepted path.
Prompt lookup (training-free) and the Eagle/FR-Spec head both implement this.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Draft:
    tokens: torch.Tensor  # int64 [n] draft token ids in the FULL vocabulary, tree nodes in topological
    #                       order (every parent before its children); n may be 0
    parents: torch.Tensor  # int64 [n] index of each node's parent in `tokens`, -1 = child of the root
    q: torch.Tensor | None = None  # float32 [n, V_full]: the draft distribution node i was drawn from (at its
    #                                parent); None = deterministic drafter (prompt lookup; greedy-only semantics:
    #                                for sampling requests treat it as a one-hot proposal, which is still exact)


class Drafter(Protocol):
    # Optional class attribute `uses_hidden = False` (prompt lookup): the drafter never reads hidden states, so
    # commit() gets hidden=None and a step with an empty draft runs the plain decode step instead of a tree pass.

    def start(self, prompt_ids: list[int], hidden: torch.Tensor, root: int) -> None:
        """After prefill. hidden [T, H]: the target's post-final-norm hidden states for the prompt positions
        (engine.model.hidden(..., last_only=False)); hidden[i] is the state that predicts prompt_ids[i+1], and
        hidden[T-1] predicts `root`, the first sampled token (the root is not yet in the target's KV cache)."""

    def propose(self, params) -> Draft:
        """A draft tree continuing after the current root. params: the request's SamplingParams."""

    def commit(self, tokens: list[int], hidden: torch.Tensor) -> None:
        """After verification. tokens: the accepted draft tokens followed by the bonus/correction token sampled
        by the target (tokens[-1] is the new root). hidden [len(tokens), H]: hidden[i] is the target's state at
        the position whose next token is tokens[i] (hidden[0] is the old root's state)."""


def empty_draft(device: torch.device | str = "cpu") -> Draft:
    """A draft with no nodes (the verifier then just decodes one token)."""
    z = torch.zeros(0, dtype=torch.long, device=device)
    return Draft(tokens=z, parents=z.clone())
