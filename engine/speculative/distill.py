"""Self-distillation data for an Eagle head: chat prompts, and the target's own answers to them.

A head trained on corpus text learns what the text says next, not what the target says next; drafting for a
chat model it then agrees with the target on about one token in three (docs/frspec.md §7). Eagle trains on
the target's own generations instead: here the target answers chat-style prompts (greedy, batched, CUDA-graph
decode on GPU) and the head is trained on those sequences' hidden states, with the loss on the answer tokens.

Prompt files are JSONL, one prompt per line, any of:
- {"messages": [{"role": "user", "content": ...}, ...]} or {"prompt": "..."}: used as they are;
- an arXiv record {"title", "abstract", ...}: turned into one question about the paper (a seeded template);
- a BFCL record {"question": [[{"role": "user", ...}]], ...}: its first turn's messages.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

from engine.errors import EngineError
from engine.speculative.freq import json_records

# Questions about one paper; {title} and {abstract} come from the record. Short and long, so that answers
# range from a sentence to a paragraph, as chat answers do.
PAPER_QUESTIONS = (
    "Summarize this abstract in two sentences:\n\n{abstract}",
    "What problem does the paper \"{title}\" address? Its abstract:\n\n{abstract}",
    "Explain the main idea of this paper to a beginner.\n\nTitle: {title}\n\n{abstract}",
    "List the key contributions of this paper as bullet points.\n\n{abstract}",
    "What is a paper titled \"{title}\" likely about?",
    "Write a short social media post announcing the paper \"{title}\".",
    "Give three questions a reviewer might ask about this abstract:\n\n{abstract}",
    "What are the possible limitations of the approach described here?\n\n{abstract}",
    "Explain the terms in the title \"{title}\" one by one.",
    "Write a Python function related to the topic of the paper \"{title}\", with a docstring.",
)


def _records(path: Path):
    if not path.is_file():
        raise EngineError(f"prompt source {path} not found (give a .jsonl/.json file of prompts, arXiv or BFCL records)")
    return json_records(path)


def to_messages(rec: dict, rng: random.Random) -> list[dict] | None:
    """One prompt record -> chat messages, or None when the record holds nothing usable."""
    if isinstance(rec.get("messages"), list):
        return rec["messages"]
    if isinstance(rec.get("prompt"), str):
        return [{"role": "user", "content": rec["prompt"]}]
    if isinstance(rec.get("abstract"), str):
        abstract = " ".join(rec["abstract"].split())  # arXiv abstracts are hard-wrapped
        title = " ".join(str(rec.get("title", "")).split())
        q = rng.choice(PAPER_QUESTIONS)
        return [{"role": "user", "content": q.format(title=title, abstract=abstract)}]
    q = rec.get("question")
    if isinstance(q, list) and q and isinstance(q[0], list):
        return [m for m in q[0] if isinstance(m, dict) and "content" in m] or None
    return None


def build_prompts(sources: list[str | Path], seed: int = 0) -> list[list[dict]]:
    """All prompts of the sources (see the module docstring), shuffled with `seed`."""
    rng = random.Random(seed)
    out = [m for s in sources for rec in _records(Path(s)) if (m := to_messages(rec, rng))]
    if not out:
        raise EngineError(f"no prompts in {', '.join(map(str, sources))}")
    rng.shuffle(out)
    return out


def write_prompts(prompts: list[list[dict]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in prompts))
    return path


def read_prompts(path: str | Path, limit: int | None = None) -> list[list[dict]]:
    rng = random.Random(0)
    out = []
    for rec in _records(Path(path)):
        m = to_messages(rec, rng)
        if m:
            out.append(m)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise EngineError(f"no prompts in {path}")
    return out


def target_sequences(engine, prompts: list[list[dict]], max_new: int, max_seconds: float | None = None
                     ) -> list[tuple[list[int], int]]:
    """The target's greedy answers: (chat-templated prompt ids + answer ids, prompt length) per prompt, in
    batches of engine.max_batch (prompts sorted by length so a batch's rows finish together). Prompts that do
    not leave room for max_new tokens are skipped; generation stops early after max_seconds.

    The decode loop stays on the device (each step's argmax feeds the next batched step; the picks are read
    once per batch), instead of Engine.generate_batch's per-token host work (argmax read, detokenizing and stop
    checks for every row every step), which held batched answers to ~580 tok/s on the H200. An answer ends
    after its first stop token (kept, as generate reports it) or at max_new tokens: greedy, the same tokens."""
    room = engine.max_seq_len - max_new
    ids = [engine.tokenizer.encode(engine.apply_chat_template(m), add_special_tokens=False) for m in prompts]
    ids = sorted((i for i in ids if 0 < len(i) <= room), key=len)
    if not ids:
        raise EngineError(f"every prompt is longer than the context left for answers ({room} tokens)")
    stops = sorted(engine.eos_ids)
    out: list[tuple[list[int], int]] = []
    t0 = time.perf_counter()
    for g in range(0, len(ids), engine.max_batch):
        group = ids[g:g + engine.max_batch]
        for p, answer in zip(group, _greedy_batch(engine, group, max_new, stops)):
            out.append((p + answer, len(p)))
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
    return out


def _greedy_batch(engine, prompts: list[list[int]], max_new: int, stops: list[int], check: int = 32
                  ) -> list[list[int]]:
    """Greedy answers of one batch (prompt i in cache row i): the loop feeds picks back on the device and looks
    at the host only every `check` steps (to stop once every row has met a stop token)."""
    import torch

    runner, dev = engine.runner, engine.device
    logits = torch.cat([runner.prefill(p, row=b) for b, p in enumerate(prompts)])  # [B, V]
    tok = logits.argmax(-1)
    pos = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=dev)
    stop_ids = torch.tensor(stops or [-1], dtype=torch.long, device=dev)
    picks, done = [tok], torch.isin(tok, stop_ids)
    for step in range(1, max_new):
        if step % check == 0 and bool(done.all()):
            break
        tok = runner.decode_batch(tok, pos).argmax(-1)
        pos = pos + 1
        picks.append(tok)
        done = done | torch.isin(tok, stop_ids)
    rows = torch.stack(picks, 1).tolist()
    stop_set = set(stops)
    answers = []
    for row in rows:
        end = next((i + 1 for i, t in enumerate(row) if t in stop_set), len(row))
        answers.append(row[:end])
    return answers
