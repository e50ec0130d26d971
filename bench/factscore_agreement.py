"""`cpm bench factscore_agreement --index DIR [--data DIR]`: our FactScore judge against human labels.

Reads FActScore-format human-labelled atomic facts from ../shared/data/factscore/ (or --data); when that
folder is absent it says so and exits 0 (skipped), since there is nothing to compare against.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "factscore"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cpm bench factscore_agreement", description=__doc__)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"labelled facts folder (default {DEFAULT_DATA})")
    p.add_argument("--index", required=True, help="index over the labels' knowledge source")
    p.add_argument("--judge", choices=["embedding", "likelihood", "chat", "lexical"], default="embedding",
                   help="embedding: the default judge of cpm eval factscore (no language model)")
    p.add_argument("--limit", type=int, default=500, help="first N labelled facts (default 500)")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--model", default=None, help="model alias/path (default smollm2-135m)")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"skipped: no human-labelled FactScore data at {args.data} (FActScore's data/labeled/*.jsonl "
              "goes there)")
        return 0
    from retrieval.index import Index
    from survey.factscore.agreement import agreement, read_labelled

    facts = [f for _, f in zip(range(args.limit), read_labelled(args.data))]
    result = agreement(facts, _judge(args), Index.open(args.index), args.k)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


def _judge(args: argparse.Namespace):
    from survey.factscore import ChatJudge, LexicalJudge
    from survey.factscore.likelihood import EngineScorer, LikelihoodJudge

    if args.judge == "lexical":
        return LexicalJudge()
    if args.judge == "embedding":
        from survey.factscore.choose import embedding_judge

        return embedding_judge()
    from agents.chat.factory import make_chat_model

    llm = make_chat_model(backend="engine", model=args.model, temperature=0.0, seed=0)
    if args.judge == "chat":
        return ChatJudge(llm, llm.model_name)
    return LikelihoodJudge(EngineScorer(llm.engine, llm.model_name))


if __name__ == "__main__":
    sys.exit(main())
