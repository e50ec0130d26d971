"""Agreement of a judge with human labels, on FActScore's human-annotated data format.

FActScore (shmsw25/FActScore) ships `data/labeled/<LM>.jsonl`: per generation a `topic` and `annotations`,
each sentence with `human-atomic-facts` = [{"text": fact, "label": "S" | "NS" | "IR"}] (supported, not
supported, irrelevant). Irrelevant facts are skipped, as in the paper. The evidence is whatever knowledge
source the caller's index holds (FActScore used Wikipedia; our corpus is arXiv abstracts, so agreement is
only meaningful with an index over the matching source).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from survey.errors import SurveyError
from survey.factscore.evidence import Passage, Retriever
from survey.factscore.judge import Judge
from survey.factscore.schemas import SUPPORTED

LABELS = {"S": True, "NS": False}


@dataclass
class LabelledFact:
    topic: str
    text: str
    supported: bool


def read_labelled(folder: Path) -> Iterator[LabelledFact]:
    """Every S/NS human atomic fact in `folder/*.jsonl`; SurveyError on a file that is not that format."""
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise SurveyError(f"{folder} has no *.jsonl files in FActScore's labelled format")
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                for sentence in record.get("annotations") or []:
                    for fact in sentence.get("human-atomic-facts") or []:
                        if fact["label"] in LABELS:
                            yield LabelledFact(record.get("topic", ""), fact["text"], LABELS[fact["label"]])
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise SurveyError(f"{path}:{n}: not FActScore's labelled format ({exc})") from exc


def agreement(facts: list[LabelledFact], judge: Judge, index: Retriever, k: int = 3) -> dict:
    """Accuracy of `judge` against the human labels, with the confusion counts and the error rate FActScore
    reports (|estimated FactScore - human FactScore|)."""
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for fact in facts:
        query = f"{fact.topic}: {fact.text}" if fact.topic else fact.text
        passages = [Passage(f"{h.id}#c{h.chunk_id}", h.id, h.title, " ".join(h.text.split()), "retrieved")
                    for h in index.search(query, k=k)]
        ours = judge.judge(fact.text, passages).label == SUPPORTED
        counts[("t" if ours == fact.supported else "f") + ("p" if ours else "n")] += 1
    n = len(facts)
    human = sum(f.supported for f in facts) / n if n else None
    estimated = (counts["tp"] + counts["fp"]) / n if n else None
    return {"facts": n, "accuracy": (counts["tp"] + counts["tn"]) / n if n else None, **counts,
            "human_factscore": human, "estimated_factscore": estimated,
            "error_rate": abs(estimated - human) if n else None, "judge": judge.name}
