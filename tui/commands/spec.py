"""`cpm spec freq | prompts | train`: FR-Spec's frequency file, chat prompts for self-distillation, an Eagle
draft head (docs/frspec.md)."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spec", help="speculative decoding assets: FR-Spec frequency file, Eagle draft head")
    ssub = p.add_subparsers(dest="spec_command", metavar="SPEC_COMMAND")

    f = ssub.add_parser("freq", help="count token frequencies over a corpus -> freq_{K}.pt (FR-Spec format)")
    f.add_argument("--model", default="smollm2-135m", help="model alias, .gguf file or HF folder (its tokenizer)")
    f.add_argument("--corpus", required=True, help="text file or JSONL (.jsonl[.gz]; fields text | title+abstract)")
    f.add_argument("--top", type=int, default=32768, help="how many most frequent ids to keep (r)")
    f.add_argument("--out", required=True, help="output file, or a folder (then FOLDER/freq_{K}.pt)")
    f.add_argument("--json", action="store_true", help="print one JSON summary line")
    f.set_defaults(func=run_freq)

    q = ssub.add_parser("prompts", help="chat prompts for `spec train --self-distill` from arXiv/BFCL/prompt files")
    q.add_argument("--from", dest="sources", action="append", required=True, metavar="FILE",
                   help="JSONL of arXiv records (title+abstract: a question about each), BFCL records, or "
                        "{messages|prompt} lines (repeatable)")
    q.add_argument("--out", required=True, help="training prompts, JSONL of {messages}")
    q.add_argument("--eval-out", default=None, help="held-out prompts (the first --eval of the shuffled set)")
    q.add_argument("--eval", type=int, default=0, help="how many prompts to hold out for --eval-out")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=run_prompts)

    t = ssub.add_parser("train", help="fit an Eagle draft head on the model's own hidden states (GPU: minutes)")
    t.add_argument("--model", default="smollm2-135m", help="target model alias, .gguf file or HF folder")
    t.add_argument("--corpus", required=True, help="text file or JSONL the head learns from (with --self-distill: "
                   "a prompts file, e.g. from `cpm spec prompts`)")
    t.add_argument("--out", required=True, help="folder for the head (config.json, model.safetensors, freq_K.pt)")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch", type=int, default=16, help="sequences per step")
    t.add_argument("--seq-len", type=int, default=256)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--top", type=int, default=8192, help="FR-Spec vocabulary size r written beside the head")
    t.add_argument("--layers", type=int, default=1, help="Eagle decoder layers")
    t.add_argument("--max-docs", type=int, default=None, help="use at most this many corpus documents")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--max-seconds", type=float, default=None, help="stop training after this long (then save)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--self-distill", type=int, default=0, metavar="N", help="first let the model answer N prompts "
                   "of --corpus (greedy) and train on its own answers (GPU)")
    t.add_argument("--gen-tokens", type=int, default=256, help="answer length limit for --self-distill")
    t.add_argument("--gen-batch", type=int, default=64, help="prompts answered at once for --self-distill")
    t.add_argument("--gen-seconds", type=float, default=None, help="stop generating answers after this long")
    t.add_argument("--init", default=None, metavar="DIR", help="start from this head instead of the model's last layer")
    t.add_argument("--unroll", type=int, default=1, metavar="D", help="training-time test: also train the head "
                   "on its own features over D draft depths (as it drafts at depth > 1); 1 = plain Eagle")
    t.add_argument("--json", action="store_true", help="print one JSON summary line")
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_freq(args: argparse.Namespace) -> int:
    from engine.speculative.freq import build_freq

    path, ids, total = build_freq(args.model, args.corpus, args.top, args.out)
    summary = {"out": str(path), "ids": len(ids), "corpus_tokens": total, "top10": ids[:10]}
    print(json.dumps(summary) if args.json else
          f"wrote {path}: {len(ids)} ids ranked over {total} corpus tokens (most frequent: {ids[:10]})")
    return 0


def run_prompts(args: argparse.Namespace) -> int:
    from engine.errors import EngineError
    from engine.speculative.distill import build_prompts, write_prompts

    prompts = build_prompts(args.sources, seed=args.seed)
    if args.eval and not args.eval_out:
        raise EngineError("--eval needs --eval-out FILE for the held-out prompts")
    if args.eval >= len(prompts):
        raise EngineError(f"--eval {args.eval} leaves no training prompts (there are {len(prompts)})")
    if args.eval:
        write_prompts(prompts[:args.eval], args.eval_out)
    path = write_prompts(prompts[args.eval:], args.out)
    print(f"wrote {path}: {len(prompts) - args.eval} prompts" + (f"; {args.eval_out}: {args.eval} held out"
                                                                  if args.eval else ""))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from engine.speculative.train import TrainConfig, train_head

    cfg = TrainConfig(steps=args.steps, batch=args.batch, seq_len=args.seq_len, lr=args.lr, top=args.top,
                      layers=args.layers, max_docs=args.max_docs, seed=args.seed,
                      max_seconds=args.max_seconds, self_distill=args.self_distill, gen_tokens=args.gen_tokens,
                      gen_batch=args.gen_batch, gen_seconds=args.gen_seconds, init=args.init,
                      unroll=args.unroll)
    progress = None if args.json else _Bar(args.steps)
    try:
        report = train_head(args.model, args.corpus, args.out, cfg, device=args.device,
                            progress=progress.update if progress else None)
    finally:
        if progress:
            progress.close()
    if args.json:
        print(json.dumps(report))
    else:
        print(f"wrote {report['out']}: loss {report['loss_first']:.3f} -> {report['loss_last']:.3f}, "
              f"top-1 agreement {report['top1_last']:.2f}, {report['seconds']:.0f} s on {report['device']}")
    return 0


class _Bar:
    """A rich progress bar on stderr fed by train_head's (step, metrics) callback; it appears with the first
    step, so a bad argument fails with its one-line error and no bar."""

    def __init__(self, total: int):
        self.total, self._bar = total, None

    def update(self, step: int, metrics: dict) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("training Eagle head"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                 console=Console(file=sys.stderr))
            self._task = self._bar.add_task("train", total=self.total, info="")
            self._bar.start()
        info = f"loss {metrics['loss']:.3f}  top-1 {metrics['top1']:.2f}"
        self._bar.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
