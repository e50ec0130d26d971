"""`cpm bench survey_quality --index DIR --topics FILE`: how good the surveys are, this writer beside an older one.

For each topic (one a line in FILE) it writes a survey with this checkout's writer (in process) and, with
`--baseline-tree DIR` (a `git worktree` of an older commit), with that commit's `cpm survey` (a subprocess with
PYTHONPATH on the tree), both with the same sizes, index and default model, back to back. Each survey is scored:
- FactScore and citation precision/recall per judge (`survey.factscore.evaluate`, one claim per sentence as
  `cpm demo` runs it; judges: lexical = the one `cpm demo` uses on CPU, embedding = `cpm eval factscore`'s
  default, likelihood, chat);
- the prose measures of `survey.quality`: repeated-4-gram rate, share of sentences copied verbatim from a
  cited paper (longest common substring > 0.8 of the sentence), headings equal to a paper title (or its first
  words), sentences with an unfilled template slot, repeated sentences, words per body section.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from survey.quality import (has_hole, is_title_heading, is_verbatim, repeated_ngram_rate, repeats,
                            strip_citations)
from survey.text import sentences

JUDGES = ("lexical", "embedding", "likelihood", "chat")
_REF = re.compile(r"^\[(\d+)\]\s+(.*?)\s+arXiv:(\S+)\s*$")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cpm bench survey_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, required=True, help="index directory built with `cpm index build`")
    p.add_argument("--topics", type=Path, required=True, help="text file, one survey topic a line")
    p.add_argument("--baseline-tree", type=Path, help="checkout of the writer to compare with (git worktree)")
    p.add_argument("--judges", default="lexical,embedding",
                   help=f"comma-separated, of {', '.join(JUDGES)} (default lexical,embedding; likelihood takes "
                        "minutes a survey and chat ~30 s a sentence on a loaded CPU)")
    p.add_argument("--sections", type=int, default=5, help="body sections (default 5, as `cpm demo`)")
    p.add_argument("--words-per-section", type=int, default=45, help="default 45, as `cpm demo` on CPU")
    p.add_argument("--sources", type=int, default=3, help="papers per section (default 3, as `cpm demo` on CPU)")
    p.add_argument("--out-dir", type=Path, default=Path("out/survey-quality"), help="surveys and reports go here")
    p.add_argument("--json", type=Path, help="write every figure here")
    return p.parse_args(argv)


def read_topics(path: Path) -> list[str]:
    topics = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not topics:
        raise SystemExit(f"cpm bench: error: {path} holds no topics (one a line)")
    return topics


def sections_of(markdown: str) -> tuple[list[tuple[str, str]], dict[int, str]]:
    """([(heading, body)] without References, {n: arXiv id})."""
    sections, refs, current = [], {}, None
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = None if line[3:].strip() == "References" else [line[3:].strip(), ""]
            if current:
                sections.append(current)
        elif current is None and (m := _REF.match(line.strip())):
            refs[int(m.group(1))] = m.group(3)
        elif current is not None:
            current[1] += " " + line
    return [(h, b.strip()) for h, b in sections], refs


def prose_measures(markdown: str, index) -> dict:
    """The `survey.quality` measures of one survey, its cited papers read from `index`."""
    sections, refs = sections_of(markdown)
    docs = {n: index.get(doc_id) for n, doc_id in refs.items()}
    sources = [f"{d.title}. {d.text}" for d in docs.values() if d is not None]
    titles = [d.title for d in docs.values() if d is not None]
    all_sents, earlier = [], []
    repeated = holes = copied = 0
    for _, body in sections:
        for sent in sentences(body):
            plain = strip_citations(sent)
            if len(plain.split()) < 3:
                continue
            all_sents.append(plain)
            repeated += repeats(plain, earlier)
            earlier.append(plain)
            holes += has_hole(plain)
            copied += len(plain.split()) >= 5 and is_verbatim(plain, sources)
    body_sections = [(h, b) for h, b in sections if h not in ("Introduction", "Conclusion")]
    words = [len(strip_citations(b).split()) for _, b in body_sections]
    cites = [len(set(re.findall(r"\[(\d+)\]", b))) for _, b in body_sections]
    n = max(1, len(all_sents))
    return {
        "sentences": len(all_sents), "repeated_sentences": repeated, "unfilled_templates": holes,
        "verbatim_share": round(copied / n, 3), "repeated_4gram_rate": round(repeated_ngram_rate(all_sents), 4),
        "title_headings": sum(is_title_heading(h, titles) or index.find(h) is not None for h, _ in body_sections),
        "headings": [h for h, _ in body_sections],
        "words_per_section_mean": round(sum(words) / max(1, len(words)), 1),
        "words_per_section_min": min(words, default=0), "cited_per_section_min": min(cites, default=0),
    }


def factscores(markdown: str, index, judges: dict) -> dict:
    """FactScore, citation precision and recall per judge (one claim per sentence, as `cpm demo`)."""
    from survey.factscore import FactScoreConfig, evaluate

    out = {}
    for name, judge in judges.items():
        start = time.perf_counter()
        report = evaluate(markdown, llm=None, index=index, judge=judge,
                          config=FactScoreConfig(extract_with_model=False, model_name="none"))
        out[name] = {"factscore": report["factscore"], "citation_precision": report["citation_precision"],
                     "citation_recall": report["citation_recall"], "claims": report["summary"]["claims"],
                     "seconds": round(time.perf_counter() - start, 1)}
    return out


def build_judges(names: list[str], model) -> dict:
    from survey.factscore.choose import choose_judge

    return {name: choose_judge(name, model, "smollm2-135m") for name in names}


async def write_new(topic: str, model, index, settings) -> tuple[str, dict, float]:
    from agents.events import SurveyDone
    from agents.survey.runner import stream_survey

    start = time.perf_counter()
    done = None
    with tempfile.TemporaryDirectory(prefix="cpm-survey-quality-") as tmp:
        async for event in stream_survey(topic, model=model, retriever=index, db_path=Path(tmp) / "ck.sqlite",
                                         settings=settings):
            if isinstance(event, SurveyDone):
                done = event
    return done.markdown, done.trace, time.perf_counter() - start


# Run in the baseline's own tree: its survey graph with the sizes `cpm demo` passes (queries 0, which its
# `cpm survey` flags do not allow), so both writers get the same request. A baseline from before the typed
# events (agents/events.py) yields dicts; a later one yields events whose to_dict() is the same dict.
_BASELINE = """
import asyncio, sys, tempfile
from pathlib import Path
from agents.chat import make_chat_model
from agents.survey.configuration import Configuration
from agents.survey.runner import stream_survey
from retrieval import Index

topic, index, sections, words, sources, out = sys.argv[1:7]
settings = Configuration(sections=int(sections), words_per_section=int(words), sources_per_section=int(sources),
                         min_citations=min(3, int(sources)), queries_per_section=0)
model = make_chat_model(backend="engine", model=None, device="cpu")

async def run():
    with tempfile.TemporaryDirectory() as tmp:
        async for event in stream_survey(topic, model=model, retriever=Index.open(index),
                                         db_path=Path(tmp) / "ck.sqlite", settings=settings):
            data = event if isinstance(event, dict) else event.to_dict()
            if data["event"] == "done":
                Path(out).write_text(data["markdown"])

asyncio.run(run())
"""


def write_baseline(topic: str, tree: Path, args, out: Path) -> tuple[str, float]:
    """The older writer's survey graph, run from its own tree (its model load included in the time)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", _BASELINE, topic, str(args.index.resolve()), str(args.sections),
           str(args.words_per_section), str(args.sources), str(out.resolve())]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"baseline survey failed: {proc.stderr[-500:]}")
    return out.read_text(), time.perf_counter() - start


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict], judges: list[str]) -> None:
    cols = ["topic", "writer", "wall s"] + [f"FS {j}" for j in judges] + [f"cit.P {j}" for j in judges] + [
        "cit.R", "verbatim", "rep. 4-gram", "title hdg", "unfilled", "rep. sent", "words/sec", "min cited"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        fs = r["factscore"]
        cells = [r["topic"][:40], r["writer"], f"{r['wall_s']:.0f}"] + [_fmt(fs[j]["factscore"]) for j in judges] + [
            _fmt(fs[j]["citation_precision"]) for j in judges] + [
            _fmt(fs[judges[0]]["citation_recall"]), _fmt(r["verbatim_share"]), _fmt(r["repeated_4gram_rate"]),
            str(r["title_headings"]), str(r["unfilled_templates"]), str(r["repeated_sentences"]),
            _fmt(r["words_per_section_mean"]), str(r["cited_per_section_min"])]
        print("| " + " | ".join(cells) + " |")


def averages(rows: list[dict], judges: list[str]) -> list[dict]:
    """One row per writer: the mean of each figure over the topics."""
    out = []
    for writer in dict.fromkeys(r["writer"] for r in rows):
        mine = [r for r in rows if r["writer"] == writer]

        def mean(get):
            vals = [get(r) for r in mine if get(r) is not None]
            return sum(vals) / len(vals) if vals else None

        fs = {j: {k: mean(lambda r, j=j, k=k: r["factscore"][j][k])
                  for k in ("factscore", "citation_precision", "citation_recall")} for j in judges}
        out.append({"topic": f"mean of {len(mine)} topics", "writer": writer, "wall_s": mean(lambda r: r["wall_s"]),
                    "factscore": fs, **{k: mean(lambda r, k=k: r[k]) for k in (
                        "verbatim_share", "repeated_4gram_rate", "words_per_section_mean")},
                    **{k: sum(r[k] for r in mine) for k in ("title_headings", "unfilled_templates",
                                                             "repeated_sentences")},
                    "cited_per_section_min": min(r["cited_per_section_min"] for r in mine)})
    return out


def main(argv: list[str] | None = None) -> int:
    from agents.chat import make_chat_model
    from agents.survey.configuration import Configuration
    from retrieval import Index

    args = parse_args(argv)
    judges = [j.strip() for j in args.judges.split(",") if j.strip()]
    if bad := [j for j in judges if j not in JUDGES]:
        raise SystemExit(f"cpm bench: error: unknown judge(s) {bad}; choose from {', '.join(JUDGES)}")
    topics = read_topics(args.topics)
    index = Index.open(args.index)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    settings = Configuration(sections=args.sections, words_per_section=args.words_per_section,
                             sources_per_section=args.sources, min_citations=min(3, args.sources),
                             queries_per_section=0)
    model = make_chat_model(backend="engine", model=None, device="cpu")
    built = build_judges(judges, model)
    rows = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for n, topic in enumerate(topics, 1):
        writers = [("new", None)] + ([("baseline", args.baseline_tree)] if args.baseline_tree else [])
        for writer, tree in writers:
            md_path = args.out_dir / f"topic{n}-{writer}.md"
            if tree is None:
                markdown, _, wall = asyncio.run(write_new(topic, model, index, settings))
                md_path.write_text(markdown)
            else:
                markdown, wall = write_baseline(topic, tree, args, md_path)
            row = {"topic": topic, "writer": writer, "wall_s": wall, "loadavg_1m": round(os.getloadavg()[0], 1),
                   **prose_measures(markdown, index), "factscore": factscores(markdown, index, built)}
            rows.append(row)
            print(f"topic {n}/{len(topics)} {writer}: {wall:.0f} s, FactScore "
                  + ", ".join(f"{j} {_fmt(row['factscore'][j]['factscore'])}" for j in judges), flush=True)
    table = rows + averages(rows, judges)
    print_table(table, judges)
    if args.json:
        args.json.write_text(json.dumps({"started": started, "index": str(args.index), "settings":
                                         settings.model_dump(), "judges": judges, "rows": table,
                                         "cpu_count": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
