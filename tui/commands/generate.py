"""`cpm generate`: run the embedded engine on one prompt, streaming to the terminal or printing JSON."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text with the embedded engine (streams to the terminal)")
    p.add_argument("prompt", help="the prompt text (with --chat: one user message)")
    p.add_argument("--model", default="smollm2-135m", help="model alias, .gguf file or HF checkpoint folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-seq-len", type=int, default=None, help="context to allocate (default: model's, <= 8192)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap PROMPT as one user message via the chat template")
    p.add_argument("--spec", default="none", metavar="{none,auto,prompt-lookup,eagle:DIR}",
                   help="speculative decoding drafter (output unchanged, only faster): none (default), auto (prompt "
                        "lookup where it is measured to pay, plain decoding elsewhere), prompt-lookup (copy n-grams "
                        "from the context) or eagle:DIR (a draft head from cpm spec train)")
    p.add_argument("--json-schema", metavar="FILE", default=None,
                   help="constrain the output to this JSON schema (xgrammar; works with --spec)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine import Engine, SamplingParams

    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, seed=args.seed, stop=args.stop, spec=args.spec)
    params.validate()  # a bad --spec is reported before the model loads
    schema = _read_schema(args.json_schema) if args.json_schema else None
    engine = Engine.load(args.model, device=args.device, max_seq_len=args.max_seq_len)
    if schema is not None:
        params.logits_processors.append(_schema_processor(engine, schema))
    if args.chat:
        prompt = engine.apply_chat_template([{"role": "user", "content": args.prompt}])
    else:
        prompt = args.prompt
    chunks = engine.stream(prompt, params)
    result = None
    for chunk in chunks:
        if not args.json and chunk.text:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        result = chunk.result or result
    if args.json:
        out = {"text": result.text, "tokens": result.token_ids, "finish_reason": result.finish_reason,
               "prompt_tokens": result.prompt_tokens, "decode_tokens": result.decode_tokens,
               "decode_tok_s": round(result.decode_tok_s, 2)}
        if result.spec is not None:  # drafter, steps, drafted, accepted, mean_accepted_length, acceptance_rate
            out["spec"] = result.spec.as_dict()
        print(json.dumps(out))
    else:
        sys.stdout.write("\n")
        spec = "" if result.spec is None else \
            f", {result.spec.mean_accepted_length:.2f} tokens per verification ({result.spec.drafter})"
        if result.spec is not None and result.spec.auto is not None:  # what auto decided
            a = result.spec.auto.stats
            spec += f": {a.spec_steps} steps verified a draft, {a.plain_steps} plain ({a.declined} drafts declined)"
        print(f"[{result.prompt_tokens} prompt + {result.decode_tokens} generated tokens, "
              f"{result.decode_tok_s:.1f} tok/s decode{spec}, finish: {result.finish_reason}]", file=sys.stderr)
    return 0


def _read_schema(path: str) -> dict:
    from pathlib import Path

    from tui.errors import UsageError

    try:
        schema = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except OSError as exc:
        raise UsageError(f"cannot read the JSON schema {path}: {exc.strerror or exc}") from None
    if not isinstance(schema, dict):
        raise UsageError(f"{path}: a JSON schema must be an object")
    return schema


def _schema_processor(engine, schema: dict):
    """The agents layer's xgrammar logits processor for a JSON-schema response format."""
    from agents.chat.grammar import GrammarFactory

    factory = GrammarFactory(engine.tokenizer, vocab_size=engine.config.vocab_size,
                             stop_token_ids=sorted(engine.eos_ids))
    return factory.for_response_format({"type": "json_schema", "json_schema": {"name": "cli", "schema": schema}})
