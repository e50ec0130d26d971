"""`cpm spec train`: fit an Eagle draft head to a local model by self-distillation on its own hidden states.

Each step takes random windows of corpus tokens, runs the frozen target over them (post-norm hidden states h
and next-token distributions), and trains the head on pairs (h_p, embed t_{p+1}) to predict h_{p+1} (smooth-L1
feature regression) and the target's distribution at p+1 (soft cross-entropy, weight 0.1), as in Eagle.
Uniform noise on the input features stands in for the head's own imperfect features at draft time. The
result is saved in the CPM.cu layout with its FR-Spec frequency file (docs/frspec.md §5).

With `self_distill` the text is the target's own: it first answers that many chat prompts (distill.py) and
the head learns from those sequences, the loss on the answer tokens only (Eagle's recipe: a head fitted to
what the target writes, not to what a corpus says). `init` starts from an existing head instead of the
target's last layer.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.errors import EngineError
from engine.speculative.eagle import EagleHead, config_for_target, head_rows, load_head
from engine.speculative.freq import corpus_texts, load_freq, rank


@dataclass
class TrainConfig:
    steps: int = 2000
    batch: int = 16  # windows per step
    seq_len: int = 256
    lr: float = 3e-4
    warmup: int = 50
    top: int = 8192  # FR-Spec vocabulary written beside the head
    layers: int = 1
    max_docs: int | None = None
    noise: float = 0.2  # uniform noise half-width on input features, relative to their RMS
    p_weight: float = 0.1  # Eagle's weight of the token loss against the feature loss
    seed: int = 0
    max_seconds: float | None = None  # stop early (and save) after this much training time
    self_distill: int = 0  # > 0: answer this many prompts of the corpus (a prompts file) and train on that
    gen_tokens: int = 256  # answer length limit when self-distilling
    gen_batch: int = 64  # prompts answered at once
    gen_seconds: float | None = None  # stop generating answers after this long
    init: str | None = None  # start from this head folder
    unroll: int = 1  # > 1: training-time test over this many draft depths (see unroll_mask); 1 = plain Eagle


def _token_stream(engine, corpus: Path, max_docs: int | None) -> torch.Tensor:
    """All documents tokenized and joined with EOS: int64 [N]."""
    tok = engine.tokenizer
    eos = tok.eos_token_id if tok.eos_token_id is not None else next(iter(engine.eos_ids), 0)
    texts = []
    for i, t in enumerate(corpus_texts(corpus)):
        if max_docs is not None and i >= max_docs:
            break
        texts.append(t)
    if not texts:
        raise EngineError(f"corpus {corpus} holds no text")
    ids: list[int] = []
    for s in range(0, len(texts), 256):
        for seq in tok(texts[s:s + 256], add_special_tokens=False)["input_ids"]:
            ids += seq + [eos]
    stream = torch.tensor(ids, dtype=torch.long)
    if int(stream.max()) >= engine.config.vocab_size:
        raise EngineError("the tokenizer produced ids outside the model's vocabulary")
    return stream


def _distill_stream(engine, prompts_file: Path, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The target's answers to the file's first cfg.self_distill prompts, joined: (ids [N], loss weight [N]:
    1 on answer tokens, 0 on prompt tokens, report)."""
    from engine.speculative.distill import read_prompts, target_sequences

    t0 = time.perf_counter()
    prompts = read_prompts(prompts_file, cfg.self_distill)
    with torch.inference_mode():
        seqs = target_sequences(engine, prompts, cfg.gen_tokens, cfg.gen_seconds)
    ids, weight = [], []
    for seq, n_prompt in seqs:
        ids += seq
        weight += [0.0] * n_prompt + [1.0] * (len(seq) - n_prompt)
    answers = sum(len(s) - n for s, n in seqs)
    report = {"distill_prompts": len(seqs), "distill_answer_tokens": answers,
              "distill_mean_answer": round(answers / len(seqs), 1), "distill_seconds": round(time.perf_counter() - t0, 1)}
    return torch.tensor(ids, dtype=torch.long), torch.tensor(weight), report


def unroll_mask(T: int, U: int, device=None) -> torch.Tensor:
    """bool [U*T, U*T] (True = attend) for U unrolled draft depths over T positions, row/key (step v, position r)
    at index v*T + r. Step 0 is the head on the target's features (causal). Step v >= 1 at position r is the
    depth-(v+1) draft node whose committed context ends at r - v: it sees step-0 keys up to r - v and its
    ancestors, step w's key at r - v + w for 1 <= w <= v (itself included), exactly what the drafter's tree
    attention gives that node, so the head learns to draft from its own features as it does at depth > 1."""
    v = torch.arange(U, device=device).repeat_interleave(T)
    r = torch.arange(T, device=device).repeat(U)
    V, W, R, S = v[:, None], v[None, :], r[:, None], r[None, :]
    return ((W == 0) & (S <= R - V)) | ((W >= 1) & (W <= V) & (S == R - V + W))


def _unrolled(head, emb: torch.Tensor, noisy: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, U: int
              ) -> torch.Tensor:
    """The head over U draft depths at once -> features [B, U*T, H] (step-major). Step v's input feature at
    position r is step v-1's output at r - 1 (the parent's feature, as the drafter feeds it; detached), its
    token the same as step 0's (the true continuation: the path acceptance follows)."""
    T = emb.shape[1]
    hs = [noisy]
    with torch.no_grad():  # steps 1..U-1 only supply inputs; the last pass recomputes them with gradients
        for u in range(1, U):
            m = unroll_mask(T, u, emb.device)[None, None]
            f = head(emb.repeat(1, u, 1), torch.cat(hs, 1), cos.repeat(1, u, 1), sin.repeat(1, u, 1), mask=m)
            last = f[:, -T:].to(noisy.dtype)
            hs.append(torch.cat([torch.zeros_like(last[:, :1]), last[:, :-1]], 1))
    m = unroll_mask(T, U, emb.device)[None, None]
    return head(emb.repeat(1, U, 1), torch.cat(hs, 1), cos.repeat(1, U, 1), sin.repeat(1, U, 1), mask=m)


def _init_from_target(head: EagleHead, model) -> None:
    """Start the Eagle layer(s) from the target's last decoder layer; fc passes the hidden state through."""
    from engine.model import _dense

    blk = model.blocks[-1]
    H = head.config.hidden_size

    def dense(lin) -> torch.Tensor:
        parts = lin.parts or [lin.dense if lin.dense is not None else lin.weight]
        return torch.cat([_dense(w, torch.float32).float().cpu() for w in parts])

    qkv = dense(blk.qkv)
    nq, nkv = blk.nh * blk.hd, blk.nkv * blk.hd
    gate_up = dense(blk.gate_up)
    I = gate_up.shape[0] // 2
    with torch.no_grad():
        for layer in head.layers:
            a, m = layer.self_attn, layer.mlp
            a.q_proj.weight.copy_(qkv[:nq]), a.k_proj.weight.copy_(qkv[nq:nq + nkv])
            a.v_proj.weight.copy_(qkv[nq + nkv:]), a.o_proj.weight.copy_(dense(blk.o))
            m.gate_proj.weight.copy_(gate_up[:I]), m.up_proj.weight.copy_(gate_up[I:])
            m.down_proj.weight.copy_(dense(blk.down))
            if isinstance(layer.input_layernorm, torch.nn.Module) and hasattr(layer.input_layernorm, "weight"):
                layer.input_layernorm.weight.copy_(blk.ln1.float().cpu())
            layer.post_attention_layernorm.weight.copy_(blk.ln2.float().cpu())
        head.fc.weight.normal_(0, 0.02 / math.sqrt(H))
        head.fc.weight[:, H:] += torch.eye(H)


def _teacher(engine, tokens: torch.Tensor, cache) -> torch.Tensor:
    """tokens [B, T] -> the target's post-norm hidden states [B, T, H] (no grad)."""
    from engine.model import StepContext

    B, T = tokens.shape
    r = engine.runner
    cos, sin = r.cos[None, :T].expand(B, -1, -1), r.sin[None, :T].expand(B, -1, -1)  # fused kernels want [B, T, D]
    ctx = StepContext(rows=slice(0, B), start=0, kv_len=T, causal=True, cos=cos, sin=sin)
    return engine.model.hidden(tokens, ctx, cache, last_only=False)


def train_head(model, corpus, out, cfg: TrainConfig | None = None, device: str = "auto", progress=None) -> dict:
    """Fit and save a head. `model`: an alias/path or a loaded Engine. progress(step, metrics) is called each
    step. -> a report dict (losses, top-1 agreement with the target, timings)."""
    from engine.cache import KVCache
    from engine.engine import Engine

    cfg = cfg or TrainConfig()
    if cfg.steps < 1 or cfg.batch < 1 or cfg.seq_len < 4:
        raise EngineError("training needs steps >= 1, batch >= 1 and seq_len >= 4")
    if not 1 <= cfg.unroll <= 8:
        raise EngineError(f"--unroll must be 1..8 draft depths, got {cfg.unroll}")
    if isinstance(model, Engine):
        engine = model
    elif cfg.self_distill:  # room for prompt + answer, and a batch of answers at once
        engine = Engine.load(model, device=device, max_seq_len=max(cfg.seq_len, 1024), max_batch=cfg.gen_batch)
    else:
        engine = Engine.load(model, device=device, max_seq_len=cfg.seq_len)
    dev, dtype, base = engine.device, engine.dtype, engine.config
    if cfg.seq_len > engine.max_seq_len:
        raise EngineError(f"--seq-len {cfg.seq_len} exceeds the engine's context {engine.max_seq_len}")
    torch.manual_seed(cfg.seed)
    distilled: dict = {}
    if cfg.self_distill:
        stream, weight, distilled = _distill_stream(engine, Path(corpus), cfg)
    else:
        stream = _token_stream(engine, Path(corpus), cfg.max_docs)
        weight = torch.ones(len(stream))
    if len(stream) <= cfg.seq_len:
        raise EngineError(f"corpus {corpus} has only {len(stream)} tokens; need more than --seq-len {cfg.seq_len}")
    top = min(cfg.top, base.vocab_size)
    kept = Path(cfg.init) / f"freq_{top}.pt" if cfg.init else None
    if kept is not None and kept.is_file():  # the starting head's ranking: counted over its (larger) corpus
        freq_ids = load_freq(kept, base.vocab_size).tolist()
    else:
        freq_ids = rank(torch.bincount(stream, minlength=base.vocab_size), top, engine.tokenizer.eos_token_id)

    if cfg.init:
        head, _ = load_head(Path(cfg.init), base)
        head.requires_grad_(True)
    else:
        head = EagleHead(config_for_target(base, cfg.layers))
        _init_from_target(head, engine.model)
    head = head.to(dev).train()
    rows = head_rows(engine.model, None)  # frozen full LM head [V, H], dense
    embed = engine.model.embed
    cache = KVCache(base, cfg.batch, cfg.seq_len, dev, dtype)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    t0 = time.perf_counter()

    def lr_factor(s: int) -> float:  # warmup, then cosine over steps or the time budget, whichever ends first
        done = s / cfg.steps
        if cfg.max_seconds:
            done = max(done, (time.perf_counter() - t0) / cfg.max_seconds)
        return min(1.0, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = torch.Generator().manual_seed(cfg.seed)
    T = cfg.seq_len
    cos, sin = engine.runner.cos[None, :T - 1], engine.runner.sin[None, :T - 1]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    history: list[dict] = []
    scale = None  # the target's mean feature RMS: the feature loss is measured in units of it
    for step in range(1, cfg.steps + 1):
        starts = torch.randint(0, len(stream) - T, (cfg.batch,), generator=gen)
        tokens = torch.stack([stream[s:s + T] for s in starts.tolist()]).to(dev)  # [B, T]
        w = torch.stack([weight[s + 1:s + T] for s in starts.tolist()]).to(dev)  # [B, T-1]: of token p+1
        wsum = w.sum().clamp(min=1.0)
        with torch.no_grad():
            h = _teacher(engine, tokens, cache).float()  # [B, T, H]
            target_logp = torch.log_softmax(engine.model.logits(h[:, 1:].to(dtype)), -1)  # [B, T-1, V]
            emb = F.embedding(tokens[:, 1:], embed).float() * base.scale_emb
            rms = h.pow(2).mean(-1, keepdim=True).sqrt()
            scale = scale or float(rms.mean())
            noisy = h[:, :-1] + (torch.rand_like(h[:, :-1]) * 2 - 1) * cfg.noise * rms[:, :-1]
        U = cfg.unroll
        with autocast:
            f = head(emb, noisy, cos, sin) if U == 1 else _unrolled(head, emb, noisy, cos, sin, U)  # [B, U(T-1), H]
            logits = F.linear(f * base.logit_scale, rows.to(f.dtype)).float()
        h_next, t_logp, wu = h[:, 1:], target_logp, w
        if U > 1:  # every depth predicts the same next feature and token at its position; depth v needs r >= v
            r = torch.arange(T - 1, device=dev)
            h_next, t_logp = h_next.repeat(1, U, 1), t_logp.repeat(1, U, 1)
            wu = torch.cat([w * (r >= v) for v in range(U)], 1)
        wsum_u = wu.sum().clamp(min=1.0)
        v_loss = (F.smooth_l1_loss(f.float() / scale, h_next / scale, reduction="none").mean(-1) * wu).sum() / wsum_u
        p_loss = (-(t_logp.exp() * torch.log_softmax(logits, -1)).sum(-1) * wu).sum() / wsum_u
        loss = v_loss + cfg.p_weight * p_loss
        logits = logits[:, :T - 1]  # top-1 agreement below: depth 1, comparable across --unroll
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 0.5)
        opt.step()
        sched.step()
        with torch.no_grad():
            top1 = ((logits.argmax(-1) == target_logp.argmax(-1)).float() * w).sum().item() / wsum.item()
        metrics = {"step": step, "loss": loss.item(), "v_loss": v_loss.item(), "p_loss": p_loss.item(), "top1": top1}
        history.append(metrics)
        if progress is not None:
            progress(step, metrics)
        if cfg.max_seconds and time.perf_counter() - t0 > cfg.max_seconds:
            break
    seconds = time.perf_counter() - t0
    head = head.eval().float().cpu()
    name = model if isinstance(model, str) else str(engine.path)
    tail = history[-min(20, len(history)):]
    steps = len(history)
    report = {"out": str(out), "device": str(dev), "steps": steps, "seconds": round(seconds, 1),
              "tokens_seen": steps * cfg.batch * T, "corpus_tokens": len(stream),
              "loss_first": history[0]["loss"], "loss_last": sum(m["loss"] for m in tail) / len(tail),
              "top1_first": history[0]["top1"], "top1_last": sum(m["top1"] for m in tail) / len(tail),
              "fr_vocab": len(freq_ids), **distilled}
    head.save(Path(out), base, freq_ids, extra={"eagle_base_model": name, "eagle_train": {
        **asdict(cfg), "corpus": str(corpus),
        **{k: report[k] for k in ("steps", "tokens_seen", "loss_last", "top1_last", "seconds")}}})
    return report
