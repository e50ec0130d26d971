"""`cpm bench factscore_calibration [--corpus FILE] [--start 100] [--n 13]`: the likelihood judge's margins.

For each corpus abstract with a usable sentence: the worst-token log-prob of the sentence copied, of the
sentence negated (or its number changed, every other paper) given the abstract's best passage, and of the
copied sentence given another paper's abstract (line + 500). Prints a Markdown table and how many of each
kind pass the threshold; docs/factscore.md records a run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "arxiv_llm_mini.jsonl"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cpm bench factscore_calibration", description=__doc__)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--start", type=int, default=100, help="first corpus line (0-based)")
    p.add_argument("--n", type=int, default=13, help="corpus lines to try")
    p.add_argument("--model", default="smollm2-135m")
    args = p.parse_args(argv)

    from engine.assets import resolve
    from retrieval.types import Document
    from survey.factscore.evidence import overlap, passages_of
    from survey.factscore.likelihood import THRESHOLD, HFScorer, LikelihoodJudge
    from survey.factscore.perturb import candidate_sentence, change_number, negate

    judge = LikelihoodJudge(HFScorer(str(resolve(args.model)), f"hf:{args.model}"))
    lines = args.corpus.read_text(encoding="utf-8").splitlines()
    docs = [Document(id=r["id"], title=r["title"], text=r["abstract"]) for r in map(json.loads, lines)]

    def score(claim: str, doc: Document) -> float:
        return judge.passage_score(claim, max(passages_of(doc), key=lambda q: overlap(claim, q.text)))

    passed = {"copied": 0, "altered": 0, "wrong": 0}
    rows = 0
    print("| corpus line | copied | altered (kind) | copied, other paper's abstract |\n| --- | --- | --- | --- |")
    for i in range(args.start, args.start + args.n):
        need_number = rows % 2 == 1
        sentence = candidate_sentence(docs[i].text, need_number)
        if sentence is None:
            continue
        rows += 1
        altered = change_number(sentence) if need_number else negate(sentence)
        got = {"copied": score(sentence, docs[i]), "altered": score(altered, docs[i]),
               "wrong": score(sentence, docs[(i + 500) % len(docs)])}
        passed = {k: passed[k] + (got[k] >= THRESHOLD) for k in passed}
        kind = "number" if need_number else "negated"
        print(f"| {i} | {got['copied']:.2f} | {got['altered']:.2f} ({kind}) | {got['wrong']:.2f} |", flush=True)
    print(f"\nat threshold {THRESHOLD}: supported {passed['copied']}/{rows} copied, "
          f"{passed['altered']}/{rows} altered, {passed['wrong']}/{rows} copied-with-wrong-paper")
    return 0
