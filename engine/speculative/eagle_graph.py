"""The Eagle drafter's greedy tree draft as one CUDA graph.

A tree draft is depth - 1 head passes plus LM-head calls and top-k selections: some hundreds of small
kernels, which on a small target cost more in launches than the target's own graph-replayed decode step.
The commit pass (the accepted pairs through the head) is captured too, once per padded length bucket.
The whole draft is captured once (`EagleDrafter._tree_nodes` in its static-shape form: slots, positions and
the attention mask over the head's whole cache are computed on the device from a 0-dim committed-length
tensor) and replayed with the new root feature and length copied into static buffers. Drafts that cannot
use it (sampling, a depth cut short near the context end) run eagerly.
"""
from __future__ import annotations

import torch

from engine.cuda_graph import capture_graph


class DraftGraph:
    def __init__(self, drafter):
        self.d = drafter
        H = drafter.head.config.hidden_size
        self.f_root = torch.zeros(H, device=drafter.dev, dtype=drafter.dtype)
        self.n = torch.zeros((), dtype=torch.long, device=drafter.dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: tuple[torch.Tensor, torch.Tensor] | None = None

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d._tree_nodes(self.d.depth, self.f_root, self.n)

    def run(self, f_root: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, parents) of the tree after a root with feature f_root at committed length n."""
        self.f_root.copy_(f_root)
        self.n.fill_(n)
        if self.graph is None:
            self.graph, self.out = capture_graph(self._step)
        self.graph.replay()
        return self.out[0].clone(), self.out[1].clone()


COMMIT_BUCKETS = (1, 2, 4, 8, 16)


class CommitGraph:
    def __init__(self, drafter, T: int):
        self.d, self.T = drafter, T
        H = drafter.head.config.hidden_size
        self.tokens = torch.zeros(T, dtype=torch.long, device=drafter.dev)
        self.hidden = torch.zeros(T, H, device=drafter.dev, dtype=drafter.dtype)
        self.n = torch.zeros((), dtype=torch.long, device=drafter.dev)
        self.t = torch.ones((), dtype=torch.long, device=drafter.dev)
        self.graph, self.out = None, None

    def run(self, tokens: list[int], hidden: torch.Tensor, n: int) -> torch.Tensor:
        t = len(tokens)
        self.tokens.copy_(torch.tensor(tokens + [0] * (self.T - t)), non_blocking=True)
        self.hidden.zero_()
        self.hidden[:t].copy_(hidden)
        self.n.fill_(n)
        self.t.fill_(t)
        if self.graph is None:
            self.graph, self.out = capture_graph(lambda: self.d._commit_static(self.tokens, self.hidden, self.n, self.t))
        self.graph.replay()
        return self.out.clone()


def commit_graph(drafter, t: int) -> CommitGraph | None:
    """The bucket's commit graph for t pairs, or None when t is too long or padding would pass the cache."""
    T = next((b for b in COMMIT_BUCKETS if b >= t), None)
    if T is None or drafter.n + T > min(drafter.k.shape[3], len(drafter.cos)):  # padding slots/positions fit
        return None
    key = ("commit", T)
    if key not in drafter.graphs:
        drafter.graphs[key] = CommitGraph(drafter, T)
    return drafter.graphs[key]


def graphs_apply(drafter) -> bool:
    """Whether the drafter may replay graphs: CUDA, with the runner's own graphs on (kernels on, no backend)."""
    on = getattr(drafter.engine.runner, "graphs_on", lambda: False)
    return drafter.dev.type == "cuda" and bool(on())
