"""The Eagle / FR-Spec drafter: the `Drafter` protocol (engine/speculative/drafter.py) over an `EagleHead`.

The head keeps its own static KV cache whose slot p holds the pair (target hidden h_p, embedding of token
p+1), so committed slots line up with the target's positions. A draft tree is written after the committed
slots (`width` slots per depth) and simply overwritten by the next commit: rollback costs nothing.

Greedy requests get an Eagle-2-style tree (docs/frspec.md §1): expand the `width` best frontier nodes by
cumulative log-probability, `depth` levels, keep the best `tree_size` nodes. Sampling requests get a chain
sampled from q, the head's warped distribution, returned in `Draft.q` for exact speculative sampling.
The LM head is the target's, pruned to the FR-Spec frequency list when the head folder has one.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from engine.errors import EngineError
from engine.sampling import _warp
from engine.speculative.drafter import Draft
from engine.speculative.eagle import EagleHead, head_rows, load_head
from engine.speculative.freq import find_freq, load_freq

PREFILL_CHUNK = 512


class EagleDrafter:
    def __init__(self, engine, head: EagleHead, freq_ids: torch.Tensor | None, depth: int = 5, width: int = 4,
                 tree_size: int = 24):
        if depth < 1 or width < 1 or tree_size < 1:
            raise EngineError(f"Eagle draft shape must be positive: depth={depth} width={width} tree_size={tree_size}")
        self.engine, self.depth, self.width, self.tree_size = engine, depth, width, tree_size
        m = engine.model
        self.dev, self.dtype = engine.device, engine.dtype
        self.head = head.to(self.dev, self.dtype).fuse()
        self.scale_emb, self.logit_scale = m.cfg.scale_emb, m.cfg.logit_scale
        self.freq_ids = None if freq_ids is None else freq_ids.to(self.dev)
        self.rows_fr = head_rows(m, self.freq_ids) if self.freq_ids is not None else None
        self.pruned = self.rows_fr is not None  # FR-Spec head in use (bench flips it to time the full head)
        c = head.config
        slots = engine.max_seq_len + depth * width + 1
        shape = (c.num_layers, 1, c.num_kv_heads, slots, c.head_dim)
        self.k = torch.zeros(shape, device=self.dev, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.dev, dtype=self.dtype)
        self.cos, self.sin = engine.runner.cos, engine.runner.sin
        self.n = 0  # committed slots
        self.f_root: torch.Tensor | None = None  # head output at slot n-1: predicts the root's successor
        self.gen: torch.Generator | None = None
        self.gen_seed: int | None = None
        self.use_graph = False  # greedy trees replayed as CUDA graphs (eagle_graph.py), one per head mode
        self.graphs: dict = {}

    # ---- the head over slots -----------------------------------------------------------------------------
    def _caches(self):
        return [(self.k[i], self.v[i]) for i in range(self.k.shape[0])]

    def _run(self, tokens: torch.Tensor, hidden: torch.Tensor, start: int | torch.Tensor, pos: torch.Tensor,
             mask: torch.Tensor | None) -> torch.Tensor:
        """tokens [T] (full ids), hidden [T, H] at slots start..start+T (or at the T slots of a device tensor,
        attending over the whole cache with mask [T, S]), rotary positions pos [T] -> f [T, H]."""
        emb = torch.nn.functional.embedding(tokens, self.engine.model.embed)
        if self.scale_emb != 1.0:
            emb = emb * self.scale_emb
        f = self.head(emb[None], hidden[None].to(self.dtype), self.cos[pos][None], self.sin[pos][None],
                      self._caches(), start, None if mask is None else mask[None, None])
        return f[0]

    def _append(self, tokens: torch.Tensor, hidden: torch.Tensor) -> None:
        """Commit pairs at slots n.. (causal over themselves, all committed slots visible)."""
        T = len(tokens)
        for s in range(0, T, PREFILL_CHUNK):
            e = min(s + PREFILL_CHUNK, T)
            start = self.n + s
            pos = torch.arange(start, self.n + e, device=self.dev)
            mask = None
            if start > 0:
                mask = torch.arange(self.n + e, device=self.dev)[None, :] <= pos[:, None]
            f = self._run(tokens[s:e], hidden[s:e], start, pos, mask)
        self.n += T
        self.f_root = f[-1]

    def logits(self, f: torch.Tensor, pruned: bool | None = None) -> torch.Tensor:
        """Head features [..., H] -> float32 draft logits over the kept ids [..., r] (or the full vocabulary)."""
        if self.logit_scale != 1.0:
            f = f * self.logit_scale
        if (self.pruned if pruned is None else pruned) and self.rows_fr is not None:
            return torch.nn.functional.linear(f, self.rows_fr).float()
        return self.engine.model.head(f).float()

    def _to_full(self, idx: torch.Tensor) -> torch.Tensor:
        return self.freq_ids[idx] if self.pruned and self.freq_ids is not None else idx

    # ---- the Drafter protocol -----------------------------------------------------------------------------
    def start(self, prompt_ids: list[int], hidden: torch.Tensor, root: int) -> None:
        if len(prompt_ids) + self.depth * self.width + 1 > self.k.shape[3]:
            raise EngineError("prompt too long for the Eagle head's cache")
        self.n = 0
        nxt = torch.tensor(list(prompt_ids[1:]) + [root], dtype=torch.long, device=self.dev)
        self._append(nxt, hidden.reshape(len(prompt_ids), -1))

    def commit(self, tokens: list[int], hidden: torch.Tensor) -> None:
        hidden = hidden.reshape(len(tokens), -1)
        if self.use_graph:
            from engine.speculative.eagle_graph import commit_graph

            graph = commit_graph(self, len(tokens))
            if graph is not None:
                try:
                    self.f_root = graph.run(tokens, hidden, self.n)
                    self.n += len(tokens)
                    return
                except RuntimeError as exc:  # as in _tree: eager is always right
                    import warnings

                    warnings.warn(f"Eagle commit graph capture failed ({exc}); running eagerly")
                    self.use_graph, self.graphs = False, {}
        self._append(torch.tensor(tokens, dtype=torch.long, device=self.dev), hidden)

    def _commit_static(self, tokens: torch.Tensor, hidden: torch.Tensor, n: torch.Tensor, t: torch.Tensor
                       ) -> torch.Tensor:
        """The commit pass in static shapes (for capture): tokens [Tb] / hidden [Tb, H] padded past the t real
        pairs, written at slots n..n+Tb (padding slots lie in the draft region and are overwritten later),
        causal over the whole cache. -> the new root feature (output of the last real pair) [H]."""
        Tb = len(tokens)
        slots = n + torch.arange(Tb, device=self.dev)
        mask = torch.arange(self.k.shape[3], device=self.dev)[None, :] <= slots[:, None]
        f = self._run(tokens, hidden, slots, slots, mask)
        return f.index_select(0, (t - 1).view(1))[0]

    def propose(self, params) -> Draft:
        room = self.engine.max_seq_len - self.n - 1  # target positions left after the root
        depth = max(0, min(self.depth, room))
        if depth == 0:
            z = torch.zeros(0, dtype=torch.long, device=self.dev)
            return Draft(z, z.clone())
        if params is not None and params.temperature > 0:
            return self._chain_sampled(params, depth)
        return self._tree(depth)

    # ---- greedy: Eagle-2 dynamic tree ---------------------------------------------------------------------
    def _tree(self, depth: int) -> Draft:
        if self.use_graph and depth == self.depth:
            from engine.speculative.eagle_graph import DraftGraph

            graph = self.graphs.get(self.pruned) or self.graphs.setdefault(self.pruned, DraftGraph(self))
            try:
                return Draft(*graph.run(self.f_root, self.n))
            except RuntimeError as exc:  # a capture that fails leaves eager drafting, which is always right
                import warnings

                warnings.warn(f"Eagle draft graph capture failed ({exc}); drafting eagerly")
                self.use_graph, self.graphs = False, {}
        return Draft(*self._tree_nodes(depth, self.f_root, self.n))

    def _tree_nodes(self, depth: int, f_root: torch.Tensor, n) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, parents) of the tree. n: committed slots, an int (eager: attention over [0, slot end)) or
        a 0-dim device tensor (static shapes for CUDA-graph capture: attention over the whole cache with a
        mask, slots and positions computed on the device). Both give the same tree."""
        W, dev = self.width, self.dev
        static = isinstance(n, torch.Tensor)
        lp = torch.log_softmax(self.logits(f_root), -1)
        W = min(W, lp.numel())
        score, tok = torch.topk(lp, W)
        scores, toks, parents = [score], [tok], [torch.full((W,), -1, dtype=torch.long, device=dev)]
        front_ids = torch.arange(W, device=dev)  # global node ids of the frontier
        front_tok, front_score = tok, score
        front_f = f_root.expand(W, -1)
        # tree slots each frontier node sees; set by copying an identity block (a scalar written through an index
        # tensor is a host->device copy, which a CUDA-graph capture refuses)
        eye = torch.eye(W, dtype=torch.bool, device=dev)
        anc = torch.zeros(W, depth * W, dtype=torch.bool, device=dev)
        anc[:, :W] = eye
        if static:  # built once: each depth only rewrites the tree columns (stream order keeps it safe)
            cap = torch.arange(self.k.shape[3], device=dev)
            tree_cols = n + torch.arange(depth * W, device=dev)
            mask = (cap[None, :] < n).expand(W, -1).clone()
            first = n + torch.arange(W, device=dev)  # depth 1's slots
        count = W
        for d in range(1, depth):
            if static:
                start = first + (d - 1) * W
                mask[:, tree_cols] = anc
                pos = (n + d - 1).expand(W)
            else:
                start = n + (d - 1) * W
                mask = torch.cat([torch.ones(W, n, dtype=torch.bool, device=dev), anc[:, :d * W]], dim=1)
                pos = torch.full((W,), n + d - 1, device=dev)
            f = self._run(self._to_full(front_tok), front_f, start, pos, mask)
            lp = torch.log_softmax(self.logits(f), -1)  # [W, r]
            c_lp, c_tok = torch.topk(lp, W, dim=-1)  # [W, W]
            c_score = (front_score[:, None] + c_lp).flatten()
            scores.append(c_score)
            toks.append(c_tok.flatten())
            parents.append(front_ids.repeat_interleave(W))
            pick = torch.topk(c_score, W).indices  # next frontier among the W*W children
            src = pick // W
            front_ids, front_tok, front_score = count + pick, c_tok.flatten()[pick], c_score[pick]
            front_f = f[src]
            anc = anc[src].clone()
            anc[:, d * W:(d + 1) * W] = eye
            count += W * W
        score_all, tok_all, par_all = torch.cat(scores), torch.cat(toks), torch.cat(parents)
        k = min(self.tree_size, score_all.numel())
        # stable: on equal scores a parent (inserted earlier) ranks before its child, so the kept set is a tree
        keep = torch.sort(torch.sort(score_all, descending=True, stable=True).indices[:k]).values
        remap = torch.full((score_all.numel(),), -1, dtype=torch.long, device=dev)
        remap[keep] = torch.arange(k, device=dev)
        par = par_all[keep]
        par = torch.where(par < 0, par, remap[par.clamp(min=0)])
        return self._to_full(tok_all[keep]), par

    # ---- sampling: a chain drawn from q -------------------------------------------------------------------
    def _chain_sampled(self, params, depth: int) -> Draft:
        if self.gen is None or self.gen_seed != params.seed:
            self.gen = torch.Generator(device=self.dev)
            # a seeded request drafts reproducibly; otherwise fresh OS entropy (torch.seed() would reseed the
            # caller's global RNG)
            seed = params.seed + 7919 if params.seed is not None else int.from_bytes(os.urandom(7), "little")
            self.gen.manual_seed(seed)
            self.gen_seed = params.seed
        V = self.engine.model.cfg.vocab_size
        toks, qs = [], []
        f = self.f_root
        for d in range(depth):
            full = torch.full((V,), float("-inf"), device=self.dev)
            lg = self.logits(f)
            if self.pruned and self.freq_ids is not None:
                full[self.freq_ids] = lg
            else:
                full = lg
            q = torch.softmax(_warp(full / params.temperature, params), -1)
            t = torch.multinomial(q, 1, generator=self.gen)  # [1] full id
            toks.append(t)
            qs.append(q)
            if d + 1 < depth:
                slot = self.n + d
                mask = torch.ones(1, slot + 1, dtype=torch.bool, device=self.dev)
                f = self._run(t, f[None], slot, torch.tensor([slot], device=self.dev), mask)[0]
        tokens = torch.cat(toks)
        parents = torch.arange(-1, depth - 1, device=self.dev)
        return Draft(tokens, parents, torch.stack(qs).float())

    # ---- costs for `cpm bench spec` -----------------------------------------------------------------------
    @torch.inference_mode()
    def draft_costs(self, params=None, repeats: int = 30) -> dict:
        """Median seconds of one propose() and of one LM-head call (frontier batch) with the full vs the
        FR-pruned head. Needs start() first. Leaves `pruned` as it was."""
        if self.f_root is None:
            raise EngineError("draft_costs needs a started drafter (call start() with a prompt first)")
        keep = self.pruned
        out = {}
        f = self.f_root.expand(self.width, -1).contiguous()
        for name, pruned in (("full", False), ("fr", True)):
            if pruned and self.rows_fr is None:
                continue
            self.pruned = pruned
            out[f"draft_step_s_{name}"] = _median_time(lambda: self.propose(params), repeats, self.dev)
            out[f"lm_head_s_{name}"] = _median_time(lambda: self.logits(f), repeats, self.dev)
        self.pruned = keep
        out["fr_vocab"] = None if self.freq_ids is None else int(self.freq_ids.numel())
        out["vocab"] = self.engine.model.cfg.vocab_size
        return out


def _median_time(fn, repeats: int, dev: torch.device) -> float:
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def parse_spec_dir(spec: str) -> tuple[Path, dict]:
    """'DIR' or 'DIR?depth=6&width=4&tree=32&fr=0' -> (DIR, drafter options)."""
    path, _, query = spec.partition("?")
    opts: dict = {}
    names = {"depth": "depth", "width": "width", "tree": "tree_size", "tree_size": "tree_size", "fr": "fr",
             "graph": "graph"}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key not in names or not value.isdigit():
            raise EngineError(f"bad Eagle option {part!r} in {spec!r} (use depth=N, width=N, tree=N, fr=0|1, "
                              "graph=0|1)")
        opts[names[key]] = int(value)
    return Path(path), opts


def load_eagle_drafter(engine, directory, depth: int | None = None, width: int | None = None,
                       tree_size: int | None = None, fr: bool | None = None) -> EagleDrafter:
    """The drafter behind `--spec eagle:DIR`. DIR holds config.json + model.safetensors (CPM.cu, vLLM or our
    layout) and optionally freq_{r}.pt (FR-Spec). Options may also ride on DIR as '?depth=..&width=..'."""
    path, opts = parse_spec_dir(str(directory))
    head, _ = load_head(path, engine.model.cfg)
    use_fr = opts.get("fr", 1) if fr is None else int(fr)
    freq = find_freq(path) if use_fr else None
    ids = load_freq(freq, engine.model.cfg.vocab_size) if freq is not None else None
    drafter = EagleDrafter(engine, head, ids, depth=depth or opts.get("depth", 5),
                           width=width or opts.get("width", 4), tree_size=tree_size or opts.get("tree_size", 24))
    if opts.get("graph", 1):  # CUDA: the draft tree and the commit pass replay as graphs (graph=0: eager)
        from engine.speculative.eagle_graph import graphs_apply

        drafter.use_graph = graphs_apply(drafter)
    return drafter
