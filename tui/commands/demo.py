"""`cpm demo [--corpus PATH]`: model + embedder check, demo index (built once, then reused), a survey, FactScore.

Sizes are chosen for a CPU laptop (`make demo` in about ten minutes on 2 cores) and printed; a GPU gets the
whole corpus and longer sections. Heavy imports happen inside `run`.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

DEMO_TOPIC = "Efficient inference for on-device large language models"
OUT = Path("out/demo")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build a demo index and write a cited survey on the default model",
                       description="Check the default model and embedder, build (or reuse) the demo index from "
                                   "--corpus (or from the arXiv API when online), write a survey and score it.")
    p.add_argument("--corpus", type=Path, help="arXiv-style JSONL (id, title, abstract, authors); without it the "
                                                "arXiv API is tried")
    p.add_argument("--topic", default=DEMO_TOPIC, help=f"survey topic (default: {DEMO_TOPIC!r})")
    p.add_argument("--docs", type=int, help="papers to index (default: 300 on CPU, the whole corpus on a GPU)")
    p.add_argument("--sections", type=int, default=5, help="body sections (default 5)")
    p.add_argument("--words-per-section", type=int, help="default: 45 on CPU, 150 on a GPU")
    p.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    p.add_argument("--no-factscore", action="store_true", help="skip the FactScore step")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.assets import DEFAULT_EMBEDDER, DEFAULT_LLM, resolve
    from tui.console import output_console

    console = output_console(stderr=True)
    # Step 1: assets (AssetMissing names the pip command that installs a missing one).
    llm_path, embedder_path = resolve(DEFAULT_LLM), resolve(DEFAULT_EMBEDDER)
    console.print(f"model    {DEFAULT_LLM}: {llm_path}\nembedder {DEFAULT_EMBEDDER}: {embedder_path}")
    gpu = torch.cuda.is_available()
    # CPU sizes keep `make demo` near ten minutes on 2 cores: a small on-topic index, 3 papers a section.
    docs = args.docs or (None if gpu else 300)
    words = args.words_per_section or (150 if gpu else 45)
    sources, queries = (6, 2) if gpu else (3, 0)
    console.print(f"sizes    {'GPU' if gpu else 'CPU'}: {docs or 'all'} papers indexed, {args.sections} sections x "
                  f"{sources} papers x ~{words} words (change with --docs / --sections / --words-per-section)")
    # Step 2: corpus and index.
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or fetch_corpus(args.out, args.topic, console)
    index_dir = ensure_index(corpus, args.out / "index", docs, args.topic, console)
    # Step 3: the survey, through `cpm survey`'s own steps.
    from agents.survey.configuration import Configuration
    from tui.commands import survey as survey_cmd

    settings = Configuration(sections=args.sections, words_per_section=words, sources_per_section=sources,
                             queries_per_section=queries)
    retriever = survey_cmd.open_index(index_dir)
    model = survey_cmd.load_model(None, None, None)
    import asyncio

    done = asyncio.run(survey_cmd.drive(args.topic, model, retriever, settings, args.out / "checkpoints.sqlite",
                                        None, False, index_dir=index_dir))
    paths = survey_cmd.write_outputs(done, args.out / "survey.md")
    survey_cmd.print_summary(done, paths)
    # Step 4: FactScore, when that package is present.
    if not args.no_factscore:
        run_factscore(paths["markdown"], index_dir, gpu, console)
    print(f"demo files are in {args.out}/ (survey.md, survey.bib, survey.trace.json, index/)")
    return 0


def fetch_corpus(out: Path, topic: str, console) -> Path:
    """Records from the arXiv API; offline, a SurveyError that says how to pass a corpus instead."""
    from retrieval.arxiv_api import fetch_to_jsonl
    from retrieval.errors import RetrievalError
    from survey.errors import SurveyError

    path = out / "arxiv-corpus.jsonl"
    if path.exists():
        return path
    console.print(f"no --corpus given: fetching papers on {topic!r} from the arXiv API ...")
    try:
        fetch_to_jsonl(f"all:{topic}", path, max_results=300)
    except RetrievalError as exc:
        raise SurveyError(f"no corpus was given and the arXiv API could not be reached ({exc}); offline, give a "
                          "corpus: `cpm demo --corpus FILE.jsonl` or `make demo CORPUS=FILE.jsonl` (arXiv-style "
                          "JSON lines: id, title, abstract, authors)") from exc
    return path


def _stamp(corpus: Path, docs: int | None, topic: str) -> dict:
    stat = corpus.stat()
    return {"corpus": str(corpus.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime), "docs": docs,
            "topic": topic}


def ensure_index(corpus: Path, directory: Path, docs: int | None, topic: str, console) -> Path:
    """Reuse the index when it was built from the same corpus and sizes; otherwise rebuild it."""
    from retrieval import IndexConfig, build_index, read_documents

    if not corpus.exists():
        raise FileNotFoundError(f"corpus {corpus} does not exist")
    stamp_file = directory.parent / "index.source.json"
    stamp = _stamp(corpus, docs, topic)
    if (directory / "manifest.json").exists() and stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        console.print(f"index    reusing {directory}")
        return directory
    shutil.rmtree(directory, ignore_errors=True)  # our own output folder, built from another corpus or size
    chosen = pick_documents(read_documents([corpus]), topic, docs)
    console.print(f"index    embedding {len(chosen)} papers from {corpus} into {directory} ...")
    report = build_index(chosen, directory, IndexConfig(max_seq_length=128))
    console.print(f"index    {report.total_docs} papers, {report.total_chunks} chunks in {report.seconds:.0f}s")
    stamp_file.write_text(json.dumps(stamp))
    return directory


def pick_documents(documents, topic: str, limit: int | None) -> list:
    """All documents, or the first `limit` that mention a topic word (then the rest in file order).

    Deterministic, and on topic, so that a small CPU index still holds material for every section.
    """
    docs = list(documents)
    if limit is None or limit >= len(docs):
        return docs
    words = {w for w in re.findall(r"[a-z]{4,}", topic.lower())} - {"large", "language", "models", "model"}
    on_topic = [d for d in docs if words & set(re.findall(r"[a-z]{4,}", f"{d.title} {d.text}".lower()))]
    picked = {d.id for d in on_topic}
    rest = [d for d in docs if d.id not in picked]
    return (on_topic + rest)[:limit]


def run_factscore(markdown: Path, index_dir: Path, gpu: bool, console) -> None:
    import importlib.util

    if importlib.util.find_spec("survey.factscore") is None:
        console.print("factscore: not available in this build, skipped")
        return
    from tui.cli import main as cpm

    # On CPU the model-judged FactScore of a 5-section survey takes longer than the whole demo, so the demo
    # scores sentences with the lexical judge there and says so; a GPU runs the default (model) judge.
    judge = "auto" if gpu else "lexical"
    console.print(f"factscore: scoring each sentence against its cited papers (judge: {judge}; the model judge "
                  f"on CPU: cpm eval factscore {markdown} --index {index_dir} --extract sentence) ...")
    cpm(["eval", "factscore", str(markdown), "--index", str(index_dir), "--extract", "sentence", "--judge", judge])
