"""Constrained decoding with speculation: drafts are cut where they leave the constraint, before verification.

Correctness needs nothing from here: the verifier calls the request's logits processors only at positions
that are really emitted, in order, so a grammar mask is applied exactly as in plain decoding. This is about
speed: a drafted token the grammar forbids can never be accepted, so it (and its subtree) is dropped before
the target pays for it. A processor opts in by implementing `DraftChecker`; a grammar matcher does it with
accept + rollback, leaving its state as it was.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from engine.speculative.drafter import Draft


@runtime_checkable
class DraftChecker(Protocol):
    def draft_prefix_ok(self, generated: list[int], tokens: list[int]) -> int:
        """How many leading `tokens` the constraint allows right after `generated` (the ids emitted so far);
        the processor's state afterwards is as before the call."""


def select(draft: Draft, keep: list[int]) -> Draft:
    """The sub-tree of the nodes in `keep` (ascending, closed under ancestors), parents renumbered."""
    if len(keep) == len(draft.tokens):
        return draft
    new_index = {old: new for new, old in enumerate(keep)}
    par = draft.parents.tolist()
    parents = [-1 if par[i] < 0 else new_index[par[i]] for i in keep]
    dev = draft.tokens.device
    idx = torch.tensor(keep, dtype=torch.long, device=dev)
    return Draft(draft.tokens[idx], torch.tensor(parents, dtype=torch.long, device=dev),
                 None if draft.q is None else draft.q[idx.to(draft.q.device)])


def filter_draft(draft: Draft, processors: list, generated: list[int]) -> Draft:
    """Drop every node whose path from the root contains a token some DraftChecker processor forbids."""
    checkers = [p for p in processors if isinstance(p, DraftChecker)]
    if not checkers or not len(draft.tokens):
        return draft
    toks, par = draft.tokens.tolist(), draft.parents.tolist()
    paths: list[list[int] | None] = []
    keep = []
    for i, (t, p) in enumerate(zip(toks, par)):
        base = [] if p < 0 else paths[p]
        path = None if base is None else base + [t]
        if path is not None and any(c.draft_prefix_ok(generated, path) < len(path) for c in checkers):
            path = None
        paths.append(path)
        if path is not None:
            keep.append(i)
    return select(draft, keep)
