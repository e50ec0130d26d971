"""The survey graph: plan -> dispatch -> section (x N, capped fan-out) -> frame -> render.

Each body section is its own task (sent by `dispatch`, at most `max_parallel` at a time), so the SQLite
checkpointer records every finished section and a resumed run only writes the missing ones. Nodes stream
progress through LangGraph's custom stream (`{"event": ...}` dicts); `agents.survey.runner` turns the
stream into events for the CLI and the TUI.
"""
from __future__ import annotations

import asyncio
import time
from typing import Literal

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send

from agents.chat import telemetry
from agents.survey import prompts
from agents.survey.configuration import Configuration
from agents.survey.state import SectionTask, SurveyContext, SurveyState
from survey.bibtex import render_bibtex
from survey.citations import (check_citations, cite_summary, ground_minimum, join_reports, numbered_sources,
                              to_local)
from survey.errors import SurveyError
from survey.llm import generate
from survey.outline import Outline, SectionPlan, parse_outline
from survey.render import all_sources, numbering, render_markdown
from survey.section import SectionResult, Usage
from survey.sources import Source, parse_queries, require_hits, rerank, search
from survey.trace import build_trace, trace_steps
from survey.verify import citation_problems

INTRO, CONCLUSION = -1, -2


async def _ask(runtime: Runtime[SurveyContext], cfg: Configuration, section: int, stage: str,
               prompt: str, max_tokens: int) -> tuple[str, Usage]:
    """One model call with token and retry events tagged with the section and stage."""
    emit = get_stream_writer()
    emit({"event": "stage", "section": section, "stage": stage})
    text, usage = await generate(
        runtime.context.model, prompts.SYSTEM, prompt, retries=cfg.retries, backoff_s=cfg.backoff_s,
        max_tokens=max_tokens,
        on_token=lambda t: emit({"event": "token", "section": section, "stage": stage, "text": t}),
        on_retry=lambda n, exc: emit({"event": "retry", "section": section, "stage": stage, "attempt": n,
                                      "error": f"{type(exc).__name__}: {exc}"}))
    # Label the call's telemetry with where it was spent, for the trace and the --stats table.
    steps = [{"section": section, "stage": stage, **step} for step in usage.steps]
    for step in steps:
        emit({"event": "step", "section": section, "stage": stage, "telemetry": step})
    return text, usage.model_copy(update={"steps": steps})


async def _search(runtime: Runtime[SurveyContext], query: str, k: int) -> list[Source]:
    # FAISS and the query embedder are blocking; a thread keeps the event loop (and the TUI) responsive.
    return await asyncio.to_thread(search, runtime.context.retriever, query, k)


async def plan(state: SurveyState, config: RunnableConfig,
               runtime: Runtime[SurveyContext]) -> Command[Literal["dispatch"]]:
    """Retrieve for the topic and plan the outline (section headings with goals).

    Returns:
        Command to `dispatch` with the outline, the topic's sources and the planning usage.
    """
    cfg = Configuration.from_runnable_config(config)
    start = time.perf_counter()
    # Step 1: the first retrieval anchors the outline in what the index actually holds.
    sources = require_hits(await _search(runtime, state["topic"], cfg.plan_hits), f"the topic {state['topic']!r}")
    # Step 2: ask for headings; parse_outline fills any the model misses from the retrieved titles.
    titles = "\n".join(f"- {s.title}" for s in sources)
    text, usage = await _ask(runtime, cfg, INTRO, "plan",
                             prompts.PLAN.format(topic=state["topic"], titles=titles, n=cfg.sections),
                             max_tokens=24 * cfg.sections + 16)
    outline = parse_outline(text, state["topic"], cfg.sections, sources)
    get_stream_writer()({"event": "outline", "outline": outline.model_dump()})
    return Command(goto="dispatch", update={
        "outline": outline.model_dump(), "plan_sources": [s.model_dump() for s in sources],
        "plan_usage": usage.model_dump(), "plan_s": time.perf_counter() - start})


async def dispatch(state: SurveyState, config: RunnableConfig) -> Command[Literal["section", "frame"]]:
    """Send the next unwritten sections (at most `max_parallel`), or go on to the frame when all are done."""
    cfg = Configuration.from_runnable_config(config)
    outline = Outline(**state["outline"])
    done = state.get("sections", {})
    pending = [i for i in range(len(outline.sections)) if str(i) not in done]
    if not pending:
        return Command(goto="frame")
    avoid = sorted({d for s in done.values() for d in s["cited_ids"]})
    return Command(goto=[Send("section", SectionTask(index=i, topic=state["topic"], avoid=avoid,
                                                     plan=outline.sections[i].model_dump()))
                         for i in pending[: cfg.max_parallel]])


async def _write_checked(runtime, cfg: Configuration, index: int, title: str, goal: str, topic: str,
                         sources: list[Source], min_citations: int) -> tuple[SectionResult, Usage]:
    """Write, check citations, revise while the check fails (bounded), then ground the minimum."""
    max_words = int(cfg.words_per_section * 1.5)
    listed = numbered_sources(sources)
    text, usage = await _ask(runtime, cfg, index, "write", prompts.WRITE.format(
        sources=listed, title=title, topic=topic, goal=goal, words=cfg.words_per_section,
        min_citations=min_citations), max_tokens=cfg.prose_tokens)
    report = check_citations(text, sources, max_words)
    revisions = 0
    while report.problems(min_citations) and revisions < cfg.max_revisions:
        revisions += 1
        problems = "; ".join(report.problems(min_citations)[-4:])
        text, u = await _ask(runtime, cfg, index, f"revise {revisions}", prompts.REVISE.format(
            sources=listed, title=title, draft=to_local(report.text, sources) or "(empty)", problems=problems,
            words=cfg.words_per_section, min_citations=min_citations), max_tokens=cfg.prose_tokens)
        usage = usage.add(u)
        candidate = check_citations(text, sources, max_words)
        # Keep whichever draft cites more distinct sources; a revision can be worse than the draft.
        if len(candidate.cited_ids) >= len(report.cited_ids) and candidate.text:
            report = candidate
    report = ground_minimum(report, sources, min_citations)
    result = SectionResult(index=index, title=title, goal=goal, sources=sources, text=report.text,
                           cited_ids=report.cited_ids, revisions=revisions, dropped_citations=report.dropped,
                           grounded=report.grounded, run_id=runtime.context.run_id)
    return result, usage


async def _write_per_source(runtime, cfg: Configuration, index: int, title: str, goal: str, topic: str,
                            sources: list[Source], min_citations: int) -> tuple[SectionResult, Usage]:
    """One short summary per source, each cited to its own source when it matches it; a failed summary is
    asked again once, closer to the abstract; then the minimum is grounded as in `_write_checked`."""
    words = max(12, cfg.words_per_section // len(sources))
    usage, reports, revisions = Usage(), [], 0
    for n, src in enumerate(sources, 1):
        abstract = src.text[:700]
        text, u = await _ask(runtime, cfg, index, f"source {n}/{len(sources)}", prompts.SUMMARY.format(
            n=n, title=src.title, abstract=abstract, words=words, section=title), max_tokens=int(words * 1.6) + 24)
        usage = usage.add(u)
        report = cite_summary(text, src, heading=f"{title} {topic}")
        if not report.text and revisions < cfg.max_revisions * len(sources):
            revisions += 1
            text, u = await _ask(runtime, cfg, index, f"revise {n}", prompts.SUMMARY_RETRY.format(
                n=n, title=src.title, abstract=abstract), max_tokens=int(words * 1.6) + 24)
            usage = usage.add(u)
            report = cite_summary(text, src, heading=f"{title} {topic}")
        reports.append(report)
    report = ground_minimum(join_reports(reports), sources, min_citations)
    result = SectionResult(index=index, title=title, goal=goal, sources=sources, text=report.text,
                           cited_ids=report.cited_ids, revisions=revisions, dropped_citations=report.dropped,
                           grounded=report.grounded, run_id=runtime.context.run_id)
    return result, usage


async def section(task: SectionTask, config: RunnableConfig,
                  runtime: Runtime[SurveyContext]) -> Command[Literal["dispatch"]]:
    """Queries -> retrieve (dedupe, rerank by the goal) -> write with [n] -> check -> revise -> ground.

    Returns:
        Command back to `dispatch`, adding this section under its index.
    """
    cfg = Configuration.from_runnable_config(config)
    index, sec = task["index"], SectionPlan(**task["plan"])
    start = time.perf_counter()
    usage = Usage()
    # Step 1: queries: the heading and goal always, plus what the model suggests.
    queries = [sec.title, f"{task['topic']}: {sec.goal}"]
    if cfg.queries_per_section:
        text, usage = await _ask(runtime, cfg, index, "queries", prompts.QUERIES.format(
            topic=task["topic"], title=sec.title, goal=sec.goal, n=cfg.queries_per_section),
            max_tokens=16 * cfg.queries_per_section + 8)
        queries += parse_queries(text, cfg.queries_per_section)
    # Step 2: retrieve for every query, then dedupe and rerank by the section goal.
    get_stream_writer()({"event": "stage", "section": index, "stage": "retrieve"})
    found: list[Source] = []
    for query in queries:
        found += await _search(runtime, query, cfg.hits_per_query)
    require_hits(found, f"section {sec.title!r}")
    sources = rerank(f"{sec.title} {sec.goal}", found, cfg.sources_per_section, set(task["avoid"]))
    # Step 3: write and check.
    least = min(cfg.min_citations, len(sources))
    if cfg.write_mode == "per_source":
        result, u = await _write_per_source(runtime, cfg, index, sec.title, sec.goal, task["topic"], sources,
                                              least)
    else:
        result, u = await _write_checked(runtime, cfg, index, sec.title, sec.goal, task["topic"], sources, least)
    result = result.model_copy(update={"queries": queries, "retrieved_ids": list(dict.fromkeys(s.id for s in found)),
                                       "usage": usage.add(u), "seconds": time.perf_counter() - start})
    # The cited papers travel with the event so a front end can list them (the TUI's references panel).
    cited = [src.model_dump(include={"id", "title", "authors", "year", "text"})
             for src in result.sources if src.id in result.cited_ids]
    get_stream_writer()({"event": "section_done", "section": index, "title": sec.title,
                         "cited": len(result.cited_ids), "seconds": result.seconds, "sources": cited})
    return Command(goto="dispatch", update={"sections": {str(index): result.model_dump()}})


async def frame(state: SurveyState, config: RunnableConfig,
                runtime: Runtime[SurveyContext]) -> Command[Literal["render"]]:
    """Write the introduction (citing the topic's sources) and the conclusion (from the sections, uncited)."""
    cfg = Configuration.from_runnable_config(config)
    outline = Outline(**state["outline"])
    body = [SectionResult(**state["sections"][str(i)]) for i in range(len(outline.sections))]
    update: dict = {}
    if "intro" not in state:
        start = time.perf_counter()
        sources = [Source(**s) for s in state["plan_sources"]][: cfg.sources_per_section]
        text, usage = await _ask(runtime, cfg, INTRO, "introduction", prompts.INTRO.format(
            sources=numbered_sources(sources), title=outline.title, words=cfg.words_per_section,
            sections="; ".join(s.title for s in body)), max_tokens=cfg.prose_tokens)
        rep = check_citations(text, sources, int(cfg.words_per_section * 1.5))
        update["intro"] = SectionResult(
            index=INTRO, title="Introduction", goal=outline.title, sources=sources, text=rep.text,
            cited_ids=rep.cited_ids, dropped_citations=rep.dropped, usage=usage, run_id=runtime.context.run_id,
            retrieved_ids=[s["id"] for s in state["plan_sources"]], seconds=time.perf_counter() - start).model_dump()
    start = time.perf_counter()
    summaries = "\n".join(f"- {s.title}: {s.goal}" for s in body)
    text, usage = await _ask(runtime, cfg, CONCLUSION, "conclusion", prompts.CONCLUSION.format(
        title=outline.title, summaries=summaries, words=cfg.words_per_section), max_tokens=cfg.prose_tokens)
    rep = check_citations(text, [], int(cfg.words_per_section * 1.5))  # no sources: every [n] is dropped
    update["conclusion"] = SectionResult(
        index=CONCLUSION, title="Conclusion", goal=outline.title, text=rep.text, usage=usage,
        dropped_citations=rep.dropped, run_id=runtime.context.run_id,
        seconds=time.perf_counter() - start).model_dump()
    return Command(goto="render", update=update)


async def render(state: SurveyState, config: RunnableConfig) -> Command[Literal["__end__"]]:
    """Markdown, BibTeX and the JSON trace; refuses to finish if any citation points outside the retrieval."""
    outline = Outline(**state["outline"])
    body = [SectionResult(**state["sections"][str(i)]) for i in range(len(outline.sections))]
    parts = [SectionResult(**state["intro"]), *body, SectionResult(**state["conclusion"])]
    markdown = render_markdown(outline.title, parts)
    retrieved = {d for p in parts for d in p.retrieved_ids} | {s["id"] for s in state["plan_sources"]}
    problems = citation_problems(markdown, retrieved)
    if problems:  # the check above makes this unreachable; it is the pipeline's guarantee, so it is enforced
        raise SurveyError(f"internal error: citations outside the retrieved documents: {problems[:3]}")
    sources = all_sources(parts)
    bibtex = render_bibtex([sources[d] for d in numbering(parts)])
    # Summed stage times; resumable, unlike a wall clock (the runner measures the wall time of one run)
    stage_s = state.get("plan_s", 0.0) + sum(p.seconds for p in parts)
    plan_usage = Usage(**state["plan_usage"])
    trace = build_trace(state["topic"], state.get("thread_id", ""), outline, parts,
                        plan_usage, [s["id"] for s in state["plan_sources"]], stage_s)
    for entry, part in zip(trace["sections"], parts):
        entry["telemetry"] = telemetry.total(part.usage.steps).as_dict()
    trace["telemetry"] = telemetry.summary(trace_steps(plan_usage, parts))
    return Command(goto="__end__", update={"markdown": markdown, "bibtex": bibtex, "trace": trace})


def build_graph() -> StateGraph:
    """The uncompiled graph; compile it with a checkpointer (see `agents.survey.runner`)."""
    builder = StateGraph(SurveyState, context_schema=SurveyContext)
    builder.add_node("plan", plan)
    builder.add_node("dispatch", dispatch)
    builder.add_node("section", section)
    builder.add_node("frame", frame)
    builder.add_node("render", render)
    builder.add_edge(START, "plan")
    return builder
