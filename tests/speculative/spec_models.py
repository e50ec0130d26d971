"""Shared by the speculative tests: tiny random MiniCPM-shaped engines, a word-level tokenizer for them, and
drafters built for testing the verifier (they are test tools, not product drafters)."""
from __future__ import annotations

import json

import torch

from engine.speculative.drafter import Draft
from tests.tiny_weights import random_layers


def word_tokenizer(vocab: int):
    """A real (tokenizers) word-level tokenizer over w0..w{vocab-1}; no EOS, so random models run to length."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def tiny_minicpm_engine(tmp_path, vocab: int = 320, seed: int = 0, max_seq_len: int = 128, hidden: int = 64,
                        logit_gain: float = 1.0, device: str = "cpu"):
    """A random MiniCPM4-shaped checkpoint (muP knobs, tied head, GQA) written in the published layout and
    loaded as an fp32 CPU Engine. logit_gain scales the embedding (hence the tied head) to sharpen or flatten
    the next-token distribution."""
    from safetensors.torch import save_file

    from engine.engine import Engine, load_checkpoint
    from engine.model import Transformer

    g = torch.Generator().manual_seed(seed)
    H, I, L, nh, nkv = hidden, 2 * hidden, 2, 4, 2
    D = H // nh
    cfg = {"architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv,
           "vocab_size": vocab, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "scale_emb": 12,
           "scale_depth": 1.4, "dim_model_base": 16, "hidden_act": "silu", "torch_dtype": "float32"}
    t = {"model.embed_tokens.weight": torch.randn(vocab, H, generator=g) * 0.1 * logit_gain,
         "model.norm.weight": 1 + 0.1 * torch.randn(H, generator=g)}
    t.update(random_layers(g, L, H, I, nh, nkv, D, prefix="model.layers."))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file(t, str(tmp_path / "model.safetensors"))
    mcfg, tensors = load_checkpoint(tmp_path)
    dev = torch.device(device)
    model = Transformer(mcfg, tensors, str(tmp_path)).to(dev, torch.float32, cache_dense=dev.type == "cpu")
    return Engine(model, word_tokenizer(vocab), mcfg, dev, torch.float32, max_seq_len, 1, tmp_path)


class RandomTreeDrafter:
    """Random trees of the given width and depth: siblings are distinct random tokens, so nearly everything
    is rejected. With `oracle` (the known plain-decoding continuation of the prompt), one randomly placed
    child at each level carries the true next token with probability `hit`, so verification accepts deep
    paths through trees whose accepted nodes are not in consecutive slots (exercising the KV compaction)."""

    def __init__(self, vocab: int, width: int = 3, depth: int = 4, seed: int = 0, oracle: list[int] | None = None,
                 hit: float = 0.8):
        self.vocab, self.width, self.depth, self.oracle, self.hit = vocab, width, depth, oracle, hit
        self.g = torch.Generator().manual_seed(seed)
        self.n_out = 0  # target tokens emitted so far (root included)

    def start(self, prompt_ids, hidden, root):
        self.n_out = 1

    def commit(self, tokens, hidden):
        self.n_out += len(tokens)

    def propose(self, params=None) -> Draft:
        tokens, parents = [], []
        frontier = [-1]  # the nodes to expand at this depth: the first one follows the oracle
        for d in range(self.depth):
            nxt = []
            for f_i, f in enumerate(frontier):
                kids = torch.randperm(self.vocab, generator=self.g)[:self.width].tolist()
                truth = self.oracle[self.n_out + d] if self.oracle and self.n_out + d < len(self.oracle) else None
                on_path = f_i == 0
                if truth is not None and on_path and float(torch.rand((), generator=self.g)) < self.hit:
                    if truth in kids:
                        kids.remove(truth)
                    kids.insert(int(torch.randint(0, self.width, (), generator=self.g)), truth)
                    kids = kids[:self.width]
                    truth_at = kids.index(truth)
                else:
                    truth_at = 0
                for j, k in enumerate(kids):
                    tokens.append(k)
                    parents.append(f)
                    idx = len(tokens) - 1
                    # the branch carrying the truth goes first in the next frontier; keep the tree small
                    if j == truth_at:
                        nxt.insert(0, idx)
                    elif len(nxt) < 2:
                        nxt.append(idx)
            frontier = nxt[:2]
        return Draft(torch.tensor(tokens, dtype=torch.long), torch.tensor(parents, dtype=torch.long))


class SampledTreeDrafter:
    """Draws each node's children i.i.d. from a fixed random distribution q (per depth) and reports q, as a
    real sampling drafter does; used to check that speculative sampling keeps the target's distribution."""

    def __init__(self, vocab: int, width: int = 2, depth: int = 2, seed: int = 0, sharp: float = 2.0):
        self.g = torch.Generator().manual_seed(seed)
        self.width, self.depth = width, depth
        self.q = torch.softmax(torch.randn(depth, vocab, generator=torch.Generator().manual_seed(seed + 1)) * sharp, -1)

    def start(self, prompt_ids, hidden, root):
        pass

    def commit(self, tokens, hidden):
        pass

    def propose(self, params=None) -> Draft:
        tokens, parents, qs, frontier = [], [], [], [-1]
        for d in range(self.depth):
            nxt = []
            for f in frontier:
                for k in torch.multinomial(self.q[d], self.width, replacement=True, generator=self.g).tolist():
                    tokens.append(k)
                    parents.append(f)
                    qs.append(self.q[d])
                    nxt.append(len(tokens) - 1)
            frontier = nxt
        return Draft(torch.tensor(tokens), torch.tensor(parents), torch.stack(qs))


def int4_layers(engine, group: int = 32) -> None:
    """Quantize the tiny model's projections to int4 (min/max per group of `group` inputs), as a GGUF Q4_1
    target is stored, so the verify pass has int4 weights to replace."""
    from engine.quant import Int4Weight, pack_int4

    for b in engine.model.blocks:
        for lin in b.linears():
            w = lin.dense if lin.dense is not None else lin.weight
            n, k = w.shape
            g = w.float().view(n, k // group, group)
            lo, hi = g.amin(-1), g.amax(-1)
            scale = ((hi - lo) / 15).clamp(min=1e-8)
            codes = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).view(n, k)
            lin.weight, lin.dense, lin.parts = Int4Weight(pack_int4(codes), scale, lo, group), None, None

