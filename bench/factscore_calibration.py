"""`cpm bench factscore_calibration [--n 40] [--judges ...]`: each judge's accuracy per variant type.

Variants of real abstract sentences (the shared corpus), each judged against the evidence the pipeline would
give a claim citing one paper (that paper's two best-overlapping passages and its record, `evidence.gather`):
- supported: `faithful` (the sentence copied), `paraphrased` (a rule-based rewording, perturb.paraphrase);
- unsupported: `negated`, `number-changed`, `wrong-citation` (the faithful sentence judged against the most
  similar *other* paper of the sample: the realistic mistake, a related paper cited), and `antonym`
  ("increases" -> "decreases": no negation cue; reported apart, see docs/factscore.md).
Papers come from two disjoint halves of the corpus: thresholds are chosen on `calib` (lines 0-1499) and
accuracy is reported on `test` (lines 1500-2999), so the numbers are not fitted to the sentences they score.

A third table scores the survey writer's own cited sentences (tests/factscore/fixtures/: two real `cpm survey`
outputs, hand-labelled in writer_labels.json): `writer-supported`, `writer-unsupported`, and
`writer-moved-citation` (each supported one judged against another paper the same survey cites). These are
model-written summaries, much further from the abstract's wording than the rule-based paraphrases.
Prints one Markdown table per set; docs/factscore.md records a run.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "arxiv_llm_mini.jsonl"
SUPPORTED_KINDS = ("faithful", "paraphrased")
UNSUPPORTED_KINDS = ("negated", "number-changed", "wrong-citation")
REPORTED_APART = ("antonym",)
SPLITS = {"calib": (0, 1500), "test": (1500, 3000)}
WRITER_KINDS = ("writer-supported", "writer-unsupported", "writer-moved-citation")
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "factscore" / "fixtures"


@dataclass
class Item:
    kind: str
    claim: str
    doc: object          # the paper whose evidence the claim is judged against
    supported: bool


class MemoEncoder:
    """The embedder with vectors kept by text: the threshold sweep re-judges the same texts many times."""

    def __init__(self, encoder):
        self.encoder, self.name, self._memo = encoder, encoder.name, {}

    def encode(self, texts: list[str]):
        import numpy as np

        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            self._memo.update(zip(new, self.encoder.encode(new)))
        return np.stack([self._memo[t] for t in texts]) if texts else self.encoder.encode([])


def build_items(docs: list, start: int, stop: int, n: int, encoder) -> list[Item]:
    """Variants of sentences of `n` papers spread over corpus lines [start, stop)."""
    import numpy as np

    from survey.factscore.perturb import antonym, candidate_sentence, change_number, negate, paraphrase

    step = max(1, (stop - start) // (n * 2))
    picked = []
    for doc in docs[start:stop:step]:
        sentence = candidate_sentence(doc.text, need_number=False)
        with_number = candidate_sentence(doc.text, need_number=True)
        if sentence or with_number:
            picked.append((doc, sentence, with_number))
        if len(picked) == n:
            break
    # wrong citation: the sample's paper (not this one, not a same-title copy) most similar to the sentence
    abstracts = encoder.encode([d.text for d, _, _ in picked])
    items: list[Item] = []
    for i, (doc, sentence, with_number) in enumerate(picked):
        if sentence:
            sims = abstracts @ encoder.encode([sentence])[0]
            order = [j for j in np.argsort(-sims) if j != i and picked[j][0].title != doc.title]
            items += [Item("faithful", sentence, doc, True),
                      Item("negated", negate(sentence), doc, False),
                      Item("wrong-citation", sentence, picked[order[0]][0], False)]
            if paraphrase(sentence):
                items.append(Item("paraphrased", paraphrase(sentence), doc, True))
            if antonym(sentence):
                items.append(Item("antonym", antonym(sentence), doc, False))
        if with_number:
            items.append(Item("number-changed", change_number(with_number), doc, False))
            if with_number != sentence:
                items.append(Item("faithful", with_number, doc, True))
                if paraphrase(with_number):
                    items.append(Item("paraphrased", paraphrase(with_number), doc, True))
    return items


def writer_items(docs: list) -> list[Item]:
    """The hand-labelled cited sentences of the fixture surveys, and each supported one with its citation moved
    to the next labelled sentence's (different) paper of the same survey."""
    from survey.factscore.markdown import parse_survey
    from survey.factscore.sentences import split_sentences

    by_id = {d.id: d for d in docs}
    labels = json.loads((FIXTURES / "writer_labels.json").read_text(encoding="utf-8"))["labels"]
    found: list[tuple[str, str, object, str]] = []  # (survey, sentence, cited doc, label)
    for label in labels:
        if label["label"] == "unclear":
            continue
        parsed = parse_survey((FIXTURES / label["survey"]).read_text(encoding="utf-8"))
        sentence = next(s for sec in parsed.sections for s in split_sentences(sec.title, sec.body)
                        if s.text.startswith(label["starts"]) and s.citations)
        doc = by_id[parsed.references[sentence.citations[0]].arxiv_id]
        found.append((label["survey"], sentence.text, doc, label["label"]))
    items = [Item("writer-supported" if lab == "supported" else "writer-unsupported", text, doc, lab == "supported")
             for _, text, doc, lab in found]
    for i, (survey, text, doc, lab) in enumerate(found):
        others = [d for s, _, d, _ in found[i + 1:] + found[:i] if s == survey and d.id != doc.id]
        if lab == "supported" and others:
            items.append(Item("writer-moved-citation", text, others[0], False))
    return items


def evidence(item: Item):
    from survey.factscore.evidence import gather

    cited, _ = gather(item.claim, [item.doc], None, k=0, per_doc=2)
    return cited


def accuracy(items: list[Item], verdicts: list[bool]) -> dict[str, tuple[int, int]]:
    """kind -> (right, total)."""
    out: dict[str, list[int]] = {}
    for item, ok in zip(items, verdicts):
        right = out.setdefault(item.kind, [0, 0])
        right[0] += ok == item.supported
        right[1] += 1
    return {k: (r, t) for k, (r, t) in out.items()}


def _sides(acc: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if any(k.startswith("writer") for k in acc):
        return WRITER_KINDS[:1], WRITER_KINDS[1:]
    return SUPPORTED_KINDS, UNSUPPORTED_KINDS


def balanced(acc: dict[str, tuple[int, int]]) -> float:
    """Mean of the supported side's and the unsupported side's accuracy (each the mean over its kinds)."""
    def side(kinds):
        rates = [acc[k][0] / acc[k][1] for k in kinds if k in acc and acc[k][1]]
        return sum(rates) / len(rates) if rates else 0.0
    supported, unsupported = _sides(acc)
    return (side(supported) + side(unsupported)) / 2


def binary(acc: dict[str, tuple[int, int]]) -> tuple[int, int]:
    kinds = sum(_sides(acc), ())
    return sum(acc[k][0] for k in kinds if k in acc), sum(acc[k][1] for k in kinds if k in acc)


def run_judge(judge, items: list[Item]) -> tuple[list[bool], float]:
    from survey.factscore.schemas import SUPPORTED

    start = time.perf_counter()
    pairs = [(item.claim, evidence(item)) for item in items]
    many = getattr(judge, "judge_many", None)
    judgements = many(pairs) if many else [judge.judge(c, p) for c, p in pairs]
    return [j.label == SUPPORTED for j in judgements], time.perf_counter() - start


def fit_threshold(make, items: list[Item], grid: list[float], tolerance: float = 0.01) -> float:
    """The lowest grid value whose judge's balanced accuracy on `items` is within `tolerance` of the best.

    Lowest, because the rule-based paraphrases stay closer to the abstract than a survey's prose does (the
    writer table shows it): among equally good thresholds, the one that accepts looser rewordings."""
    scores = [balanced(accuracy(items, run_judge(make(t), items)[0])) for t in grid]
    return min(t for t, score in zip(grid, scores) if score >= max(scores) - tolerance)


def table(rows: list[tuple[str, dict, float, int]], writer: bool = False) -> str:
    kinds = WRITER_KINDS if writer else SUPPORTED_KINDS + UNSUPPORTED_KINDS + REPORTED_APART
    head = ("| judge | " + " | ".join(kinds) + " | supported vs unsupported | balanced | ms/claim |\n"
            + "| --- " * (len(kinds) + 4) + "|")
    lines = [head]
    for name, acc, seconds, n in rows:
        cells = [f"{100 * acc[k][0] / acc[k][1]:.0f}% ({acc[k][0]}/{acc[k][1]})" if k in acc else "-" for k in kinds]
        right, total = binary(acc)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * right / total:.1f}% ({right}/{total}) | "
                     f"{100 * balanced(acc):.1f}% | {1000 * seconds / max(n, 1):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cpm bench factscore_calibration", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--n", type=int, default=40, help="papers per split (default 40)")
    p.add_argument("--likelihood", action="store_true", help="also the likelihood judge (SmolLM2 via "
                   "transformers; minutes on a CPU)")
    p.add_argument("--model", default="smollm2-135m", help="model of the likelihood judge")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if not args.corpus.exists():
        raise SystemExit(f"corpus {args.corpus} does not exist (pass --corpus FILE.jsonl)")

    from retrieval.embed import Embedder
    from retrieval.ingest import read_documents
    from survey.factscore import LexicalJudge
    from survey.factscore.embedding import EmbeddingJudge

    docs = list(read_documents([args.corpus]))
    encoder = MemoEncoder(Embedder("minilm"))
    items = {split: build_items(docs, a, b, args.n, encoder) for split, (a, b) in SPLITS.items()}
    items["writer"] = writer_items(docs)
    grid = [round(0.40 + 0.02 * i, 2) for i in range(21)]
    plain_t = fit_threshold(lambda t: EmbeddingJudge(encoder, t, exact_checks=False), items["calib"], grid)
    checked_t = fit_threshold(lambda t: EmbeddingJudge(encoder, t, exact_checks=True), items["calib"], grid)
    print(f"thresholds fitted on calib: embedding {plain_t}, embedding+checks {checked_t}\n")
    # a fresh vector memo per judge, so each one's time includes embedding its texts (as in a real run)
    base = encoder.encoder
    judges = [("lexical", lambda: LexicalJudge()),
              (f"embedding (cos >= {plain_t})",
               lambda: EmbeddingJudge(MemoEncoder(base), plain_t, exact_checks=False)),
              (f"embedding+checks (cos >= {checked_t})", lambda: EmbeddingJudge(MemoEncoder(base), checked_t))]
    if args.likelihood:
        from engine.assets import resolve
        from survey.factscore.likelihood import THRESHOLD, HFScorer, LikelihoodJudge

        scorer = HFScorer(str(resolve(args.model)), f"hf:{args.model}")
        judges.append((f"likelihood (worst token >= {THRESHOLD})", lambda: LikelihoodJudge(scorer)))
    results = {}
    for split in list(SPLITS) + ["writer"]:
        rows = []
        for name, make in judges:
            verdicts, seconds = run_judge(make(), items[split])
            acc = accuracy(items[split], verdicts)
            rows.append((name, acc, seconds, len(items[split])))
            results.setdefault(split, {})[name] = {k: list(v) for k, v in acc.items()} | {"seconds": seconds}
        where = (f"corpus lines {SPLITS[split][0]}-{SPLITS[split][1] - 1}" if split in SPLITS
                 else "the survey writer's cited sentences, hand-labelled")
        print(f"### {split} ({where}, {len(items[split])} claims)\n\n{table(rows, split == 'writer')}\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"thresholds": {"embedding": plain_t, "embedding+checks": checked_t},
                                         "results": results}, indent=2))
    return 0
