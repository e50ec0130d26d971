"""Tree verification: one target forward over root + draft tree, acceptance, and KV-cache compaction.

The tree's nodes sit in cache slots after the committed context (root at slot L, node i at L + 1 + i) but at
rotary positions L + depth, and each node attends to the committed context plus its own ancestors (the tree
attention mask). Acceptance walks down from the root one position at a time, exactly as plain decoding would
sample that position, so the output distribution is the target's:
- greedy: the target's argmax (after penalties and logits processors) is accepted if a child carries it;
- sampling: recursive rejection over the children (SpecInfer / EAGLE): child x drawn from q is kept with
  probability min(1, p(x) / q(x)); on rejection p becomes norm(max(p - q, 0)) and the next child is tried;
  when none is kept, the token is drawn from what is left of p. A drafter without q proposed its tokens
  deterministically, which is the one-hot q = δ(x) (keep with probability p(x), else zero x out of p).
Rejected nodes' K/V are simply left behind: accepted nodes are copied down to consecutive slots and the next
step's writes overwrite the rest (rollback).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.sampling import Sampler
from engine.speculative.constrain import select
from engine.speculative.drafter import Draft
from engine.speculative.graph import graph_for


def depths(parents: torch.Tensor) -> list[int]:
    """Depth of each node below the root (a child of the root has depth 1); parents in topological order."""
    d: list[int] = []
    for p in parents.tolist():
        d.append(1 if p < 0 else d[p] + 1)
    return d


def prune(draft: Draft, max_nodes: int, max_depth: int) -> Draft:
    """Keep the first `max_nodes` nodes no deeper than `max_depth` (closed under ancestors, since parents come
    first and are shallower)."""
    keep = [i for i, d in enumerate(depths(draft.parents)) if d <= max_depth][:max(0, max_nodes)]
    return select(draft, keep)


def ancestry(parents: torch.Tensor) -> torch.Tensor:
    """bool [n + 1, n + 1]: row/column 0 is the root, i + 1 node i; True where the column is an ancestor of
    the row or the row itself."""
    n = len(parents)
    anc = torch.zeros(n + 1, n + 1, dtype=torch.bool)
    anc[:, 0] = True  # everything descends from the root
    for i, p in enumerate(parents.tolist()):
        anc[i + 1] = anc[p + 1]  # a node sees what its parent sees (the root's row for p = -1) ...
        anc[i + 1, i + 1] = True  # ... and itself
    return anc


def tree_mask(parents: torch.Tensor, committed: int, device) -> torch.Tensor:
    """bool [1, 1, n + 1, committed + n + 1]: the committed prefix plus tree ancestry; True = attend."""
    n = len(parents)
    full = torch.ones(n + 1, committed + n + 1, dtype=torch.bool)
    full[:, committed:] = ancestry(parents)
    return full.to(device)[None, None]


def forward_tree(engine, root: int, draft: Draft, committed: int, row: int = 0, picks: bool = False
                 ) -> tuple[torch.Tensor, ...]:
    """Run root + draft nodes through the target, writing their K/V at slots committed..committed + n.
    Returns post-norm hidden states [n + 1, H] and float32 logits [n + 1, V] (row 0 = root), and with `picks`
    also each row's argmax int64 [n + 1] (for plain greedy acceptance; inside the graph on CUDA). On CUDA the
    pass replays a captured graph (engine/speculative/graph.py)."""
    runner, dev = engine.runner, engine.device
    n = len(draft.tokens)
    graph = graph_for(engine, n + 1, committed) if row == 0 else None
    if graph is not None:
        graph.load(root, draft.tokens, draft.parents.tolist(), committed)
        h, logits = graph.run()
        out = (h[:n + 1], logits[:n + 1])
        return out + (graph.argmax[:n + 1],) if picks else out
    tokens = torch.cat([torch.tensor([root], dtype=torch.long), draft.tokens.cpu()])
    depth = torch.tensor([0] + depths(draft.parents), dtype=torch.long)
    if n == 0:  # a plain decode step (the fast single-token attention path)
        ctx = runner.context(rows=slice(row, row + 1), start=committed, kv_len=committed + 1,
                             cos=runner.cos[None, committed:committed + 1], sin=runner.sin[None, committed:committed + 1])
    else:
        pos = (depth + committed).to(dev)
        # an attention backend must honour ctx.mask (the tree)
        ctx = runner.context(rows=slice(row, row + 1), start=committed, kv_len=committed + n + 1,
                             mask=tree_mask(draft.parents, committed, dev), cos=runner.cos[pos][None],
                             sin=runner.sin[pos][None])
    h = engine.model.hidden(tokens.to(dev)[None], ctx, engine.cache, last_only=False)[0]
    logits = engine.model.logits(h)
    return (h, logits, logits.argmax(-1)) if picks else (h, logits)


@dataclass
class Verdict:
    accepted: list[int]  # indices of accepted draft nodes, root to leaf
    tokens: list[int]  # accepted draft tokens, then the target's own next token (the new root)


def accept(draft: Draft, logits: torch.Tensor, sampler: Sampler, stops: set[int] = frozenset(),
           picks: torch.Tensor | None = None) -> Verdict:
    """Walk the tree from the root. logits [n + 1, V] float32 (row 0 = root); picks, when given, their rows'
    argmax (already computed on the device). Records every emitted token in `sampler` (so penalties and
    processors see each position in order, as in plain decoding); the walk ends at a stop token (nothing
    after it may be scored)."""
    toks = draft.tokens.tolist()
    parents = draft.parents.tolist()
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parents):
        children.setdefault(p, []).append(i)
    greedy = sampler.p.temperature == 0
    # plain greedy (nothing changes logits per position): every row's argmax in one device->host copy
    plain = greedy and sampler.seen is None and not sampler.p.logits_processors \
        and not sampler.p.no_repeat_ngram_size
    argmax = (logits.argmax(-1) if picks is None else picks).tolist() if plain else None
    node, path, out = -1, [], []
    while True:
        kids = children.get(node, [])
        if greedy:
            tok = argmax[node + 1] if argmax is not None else int(torch.argmax(sampler.process(logits[node + 1])))
            nxt = next((c for c in kids if toks[c] == tok), None)
        else:
            nxt, tok = _reject_sample(sampler, sampler.probs(sampler.process(logits[node + 1])), kids, toks, draft.q)
        sampler.record(tok)
        out.append(tok)
        if nxt is None or tok in stops:
            return Verdict(path, out)
        path.append(nxt)
        node = nxt


def _reject_sample(sampler: Sampler, p: torch.Tensor, kids: list[int], toks: list[int], q):
    """(accepted child or None, token) for one position by recursive rejection sampling over the children."""
    for c in kids:
        x = toks[c]
        qc = q[c].to(p.device, torch.float32) if q is not None else None
        qx = float(qc[x]) if qc is not None else 1.0
        px = float(p[x])
        u = float(torch.rand((), generator=sampler.gen, device=sampler.gen.device))
        if qx > 0 and u * qx < px:  # u < p(x) / q(x)
            return c, x
        rest = p.clone() if qc is None else torch.clamp(p - qc[:p.numel()], min=0.0)
        if qc is None:
            rest[x] = 0.0
        total = float(rest.sum())
        if total <= 0:  # p <= q everywhere means p == q: rejection had probability 0 (a rounding miss)
            return c, x
        p = rest / total
    return None, int(torch.multinomial(p, 1, generator=sampler.gen))


def compact(cache, committed: int, accepted: list[int], row: int = 0) -> None:
    """Move accepted nodes' K/V (slots committed + 1 + i) down to committed + 1, committed + 2, ..."""
    if not accepted or accepted == list(range(len(accepted))):
        return
    src = torch.tensor(accepted, dtype=torch.long, device=cache.k.device) + committed + 1
    dst = torch.arange(len(accepted), dtype=torch.long, device=cache.k.device) + committed + 1
    for kv in (cache.k, cache.v):
        kv[:, row, :, dst] = kv[:, row, :, src]  # the right side is gathered first (a copy)
