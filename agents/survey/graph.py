"""The survey graph: plan -> dispatch -> section (x N, capped fan-out) -> frame -> render.

Each body section is its own task (sent by `dispatch`, at most `max_parallel` at a time), so the SQLite
checkpointer records every finished section and a resumed run only writes the missing ones. Nodes stream
progress through LangGraph's custom stream as typed events (`agents.events`); `agents.survey.runner` adds its
own and yields them to the CLI and the TUI.
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
from agents.events import OutlineReady, Retry, SectionDone, SectionToken, StageStarted, SurveyStep
from agents.survey import prompts
from agents.survey.configuration import Configuration
from agents.survey.state import SectionTask, SurveyContext, SurveyState
from survey.bibtex import render_bibtex
from survey.citations import check_citations, cited_ids, numbered_sources, to_local
from survey.errors import SurveyError
from survey.grounding import (accept_rewrite, copied_sentence, parse_rewrite, passage_for, pipeline_sentence,
                              rewrite_schema)
from survey.llm import generate
from survey.outline import Outline, SectionPlan, heading_schema, name_section, outline_title, section_goal
from survey.postcheck import attach, clean_parts
from survey.render import all_sources, numbering, render_markdown
from survey.section import SectionResult, Usage
from survey.sources import Source, parse_queries, require_hits, rerank, search, with_full_text
from survey.synthesis import conclusion, introduction
from survey.text import content_words, sentences
from survey.topics import group_sources, keyphrases, tfidf_vectors
from survey.trace import build_trace, trace_steps
from survey.verify import citation_problems

INTRO, CONCLUSION = -1, -2


async def _ask(runtime: Runtime[SurveyContext], cfg: Configuration, section: int, stage: str,
               prompt: str, max_tokens: int, response_format: dict | None = None) -> tuple[str, Usage]:
    """One model call with token and retry events tagged with the section and stage."""
    emit = get_stream_writer()
    emit(StageStarted(section=section, stage=stage))
    text, usage = await generate(
        runtime.context.model, prompts.SYSTEM, prompt, retries=cfg.retries, backoff_s=cfg.backoff_s,
        max_tokens=max_tokens, response_format=response_format,
        on_token=lambda t: emit(SectionToken(section=section, stage=stage, text=t)),
        on_retry=lambda n, exc: emit(Retry(section=section, stage=stage, attempt=n,
                                           error=f"{type(exc).__name__}: {exc}")))
    # Label the call's telemetry with where it was spent, for the trace and the --stats table.
    steps = [{"section": section, "stage": stage, **step} for step in usage.steps]
    for step in steps:
        emit(SurveyStep(section=section, stage=stage, telemetry=step))
    return text, usage.model_copy(update={"steps": steps})


async def _search(runtime: Runtime[SurveyContext], query: str, k: int) -> list[Source]:
    # FAISS and the query embedder are blocking; a thread keeps the event loop (and the TUI) responsive.
    return await asyncio.to_thread(search, runtime.context.retriever, query, k)


async def _vectors(runtime: Runtime[SurveyContext], sources: list[Source]):
    texts = [f"{s.title}. {s.text}" for s in sources]
    if runtime.context.embed is None:  # a retriever without an embedder: word vectors do for grouping
        return tfidf_vectors(texts)
    return await asyncio.to_thread(runtime.context.embed, texts)


async def plan(state: SurveyState, config: RunnableConfig,
               runtime: Runtime[SurveyContext]) -> Command[Literal["dispatch"]]:
    """Retrieve for the topic, group the papers by topic and name each group: the outline.

    Returns:
        Command to `dispatch` with the outline, the topic's sources and the planning usage.
    """
    cfg = Configuration.from_runnable_config(config)
    start = time.perf_counter()
    topic = state["topic"]
    # Step 1: the first retrieval anchors the outline in what the index holds; enough papers for every group.
    hits = max(cfg.plan_hits, cfg.sections * (cfg.sources_per_section + 2))
    found = require_hits(await _search(runtime, topic, hits), f"the topic {topic!r}")
    sources = await asyncio.to_thread(with_full_text, runtime.context.retriever, found)
    # Step 2: groups by embedding, keyphrases per group.
    groups = group_sources(sources, await _vectors(runtime, sources), cfg.sections)
    phrases = keyphrases(groups, topic)
    # Step 3: the model names each group under a grammar (2-5 words); a name that fails the check gives way to
    # the group's keyphrases.
    titles = [s.title for s in sources]
    usage, plans = Usage(), []
    for group, kp in zip(groups, phrases):
        listed = "\n".join(f"- {s.title}" for s in group[:4])
        text, u = await _ask(runtime, cfg, INTRO, f"name {len(plans) + 1}", prompts.NAME.format(titles=listed),
                             max_tokens=32, response_format=heading_schema())
        usage = usage.add(u)
        heading, named_by, rejected = name_section(text, kp, group, topic, [p.title for p in plans], titles)
        plans.append(SectionPlan(title=heading, goal=section_goal(kp), source_ids=[s.id for s in group],
                                 keyphrases=kp, named_by=named_by, rejected_name=rejected))
    outline = Outline(title=outline_title(topic), sections=plans)
    get_stream_writer()(OutlineReady(outline=outline))
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
    cited = {d for s in done.values() for d in s["cited_ids"]}
    by_id = {s["id"]: s for s in state["plan_sources"]}

    def task(i: int) -> SectionTask:
        # papers of other groups, and papers other sections cite, are not this section's to take
        others = {d for j, sec in enumerate(outline.sections) if j != i for d in sec.source_ids}
        return SectionTask(index=i, topic=state["topic"], avoid=sorted(cited | others),
                           plan=outline.sections[i].model_dump(),
                           group=[by_id[d] for d in outline.sections[i].source_ids if d in by_id])

    return Command(goto=[Send("section", task(i)) for i in pending[: cfg.max_parallel]])


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
    text, copied = report.text, 0
    for src in sources:  # the floor of distinct citations: the missing papers' contribution sentences
        if len(cited_ids(text)) >= min_citations:
            break
        if src.id not in cited_ids(text) and (sentence := copied_sentence(src, content_words(title))):
            text, copied = f"{text} {attach(sentence, [src.id])}".strip(), copied + 1
    result = SectionResult(index=index, title=title, goal=goal, sources=sources, text=text,
                           cited_ids=cited_ids(text), revisions=revisions, dropped_citations=report.dropped,
                           grounded=copied, run_id=runtime.context.run_id, written_by={"model": 1, "copied": copied})
    return result, usage


async def _grounded(runtime, cfg: Configuration, index: int, title: str, src: Source, focus: set[str],
                    max_words: int, earlier: list[str], n: int) -> tuple[str | None, str, Usage]:
    """One sentence about `src`: the model's rewrite of its key sentences when it passes the checks, else the
    pipeline's own sentence; (None, ...) when the abstract gives no usable sentence."""
    own = pipeline_sentence(src, focus, max_words)
    usage = Usage()
    if cfg.rewrite:
        passage = passage_for(src, own, focus)
        if passage:
            text, usage = await _ask(runtime, cfg, index, f"rewrite {n}", prompts.REWRITE.format(passage=passage),
                                     max_tokens=int(max_words * 1.6) + 16, response_format=rewrite_schema())
            accepted = accept_rewrite(parse_rewrite(text), src, passage, earlier)
            if accepted:
                return accepted, "model", usage
    if own is not None:
        return own.text, "pipeline", usage
    return None, "", usage


async def _write_per_source(runtime, cfg: Configuration, index: int, title: str, sec: SectionPlan,
                            sources: list[Source], least: int) -> tuple[SectionResult, Usage]:
    """One grounded, cited sentence per paper until `sources_per_section` papers are cited; a paper whose
    abstract gives no usable sentence is passed over for the next. Too few? The last resort is the paper's
    contribution sentence, tidied but close to its wording (counted as `grounded` in the trace)."""
    focus = content_words(" ".join([title, *sec.keyphrases]))
    max_words = max(30, int(cfg.words_per_section * 1.5) // cfg.sources_per_section)
    usage, written, methods = Usage(), [], []
    for src in sources:
        if len(written) == cfg.sources_per_section:
            break
        text, method, u = await _grounded(runtime, cfg, index, title, src, focus, max_words,
                                          [t for t, _ in written], len(written) + 1)
        usage = usage.add(u)
        if text:
            written.append((text, src.id))
            methods.append(method)
    copied = 0
    for src in sources:  # the floor of distinct citations, where the group has the papers
        if len({d for _, d in written}) >= least:
            break
        if src.id not in {d for _, d in written} and (text := copied_sentence(src, focus)):
            written.append((text, src.id))
            copied += 1
    text = " ".join(attach(t, [d]) for t, d in written)
    cited = list(dict.fromkeys(d for _, d in written))
    result = SectionResult(index=index, title=title, goal=sec.goal, sources=sources, text=text, cited_ids=cited,
                           grounded=copied, run_id=runtime.context.run_id,
                           written_by={"model": methods.count("model"), "pipeline": methods.count("pipeline"),
                                       "copied": copied})
    return result, usage


async def section(task: SectionTask, config: RunnableConfig,
                  runtime: Runtime[SurveyContext]) -> Command[Literal["dispatch"]]:
    """The group's papers (topped up by a search when the group is small) -> one grounded sentence each.

    Returns:
        Command back to `dispatch`, adding this section under its index.
    """
    cfg = Configuration.from_runnable_config(config)
    index, sec = task["index"], SectionPlan(**task["plan"])
    start = time.perf_counter()
    usage = Usage()
    group = [Source(**s) for s in task["group"]]
    # Step 1: queries: the heading and its keyphrases, plus what the model suggests.
    queries = [sec.title, f"{task['topic']}: {', '.join(sec.keyphrases[:3]) or sec.goal}"]
    if cfg.queries_per_section:
        text, usage = await _ask(runtime, cfg, index, "queries", prompts.QUERIES.format(
            topic=task["topic"], title=sec.title, goal=sec.goal, n=cfg.queries_per_section),
            max_tokens=16 * cfg.queries_per_section + 8)
        queries += parse_queries(text, cfg.queries_per_section)
    # Step 2: the group first; retrieval adds papers no other group holds, so a small group still gets its
    # floor of citations and a weak paper of the group can be passed over.
    get_stream_writer()(StageStarted(section=index, stage="retrieve"))
    found: list[Source] = []
    for query in queries:
        found += await _search(runtime, query, cfg.hits_per_query)
    extra = rerank(f"{sec.title} {' '.join(sec.keyphrases)}", [s for s in found if s.id not in task["avoid"]],
                   cfg.sources_per_section)
    extra = await asyncio.to_thread(with_full_text, runtime.context.retriever, extra)
    sources = group + [s for s in extra if s.id not in {g.id for g in group}]
    require_hits(sources, f"section {sec.title!r}")
    # Step 3: write.
    least = min(cfg.min_citations, len(sources))
    if cfg.write_mode == "per_source":
        result, u = await _write_per_source(runtime, cfg, index, sec.title, sec, sources, least)
    else:
        result, u = await _write_checked(runtime, cfg, index, sec.title, sec.goal, task["topic"],
                                         sources[: cfg.sources_per_section], least)
    retrieved = list(dict.fromkeys([*(s.id for s in group), *(s.id for s in found)]))
    result = result.model_copy(update={"queries": queries, "retrieved_ids": retrieved,
                                       "usage": usage.add(u), "seconds": time.perf_counter() - start})
    # The cited papers travel with the event so a front end can list them (the TUI's references panel).
    cited = [src.model_dump(include={"id", "title", "authors", "year", "text"})
             for src in result.sources if src.id in result.cited_ids]
    get_stream_writer()(SectionDone(section=index, title=sec.title, cited=len(result.cited_ids),
                                    seconds=result.seconds, sources=cited))
    return Command(goto="dispatch", update={"sections": {str(index): result.model_dump()}})


def _framed(index: int, title: str, sentences: list[tuple[str, list[str]]], sources: list[Source],
            retrieved: list[str], run_id: str, seconds: float) -> dict:
    text = " ".join(attach(t, ids) for t, ids in sentences)
    cited = list(dict.fromkeys(d for _, ids in sentences for d in ids))
    return SectionResult(index=index, title=title, goal=title, sources=[s for s in sources if s.id in cited],
                         text=text, cited_ids=cited, run_id=run_id, retrieved_ids=retrieved,
                         seconds=seconds).model_dump()


async def frame(state: SurveyState, config: RunnableConfig,
                runtime: Runtime[SurveyContext]) -> Command[Literal["render"]]:
    """Introduction and conclusion that synthesise the sections (survey.synthesis): the problem in the
    abstracts' words, the groups, what they share; where they differ and the open problems the abstracts name."""
    outline = Outline(**state["outline"])
    body = [SectionResult(**state["sections"][str(i)]) for i in range(len(outline.sections))]
    plan_sources = [Source(**s) for s in state["plan_sources"]]
    by_id = {s.id: s for s in plan_sources}
    groups = [[by_id[d] for d in sec.source_ids if d in by_id] for sec in outline.sections]
    retrieved = [s.id for s in plan_sources]
    update: dict = {}
    start = time.perf_counter()
    if "intro" not in state:
        # the problem in the words of topical papers the sections do not discuss: the same paper twice reads twice
        in_body = {d for part in body for d in part.cited_ids}
        intro = introduction(state["topic"], outline.sections, groups,
                             [s for s in plan_sources if s.id not in in_body][:4])
        update["intro"] = _framed(INTRO, "Introduction", intro, plan_sources, retrieved, runtime.context.run_id,
                                  0.0)
    cited = [[s for s in part.sources if s.id in part.cited_ids] for part in body]
    said = [sent for part in body for sent in sentences(part.text)]
    outro = conclusion(state["topic"], outline.sections, cited, said)
    sources = [s for group in cited for s in group]
    update["conclusion"] = _framed(CONCLUSION, "Conclusion", outro, sources, [s.id for s in sources],
                                   runtime.context.run_id, time.perf_counter() - start)
    return Command(goto="render", update=update)


async def render(state: SurveyState, config: RunnableConfig) -> Command[Literal["__end__"]]:
    """Markdown, BibTeX and the JSON trace; refuses to finish if any citation points outside the retrieval.

    The post-check runs over the whole survey first: a sentence that repeats an earlier one (in any section),
    a sentence with an unfilled template slot, or one that loops is dropped.
    """
    outline = Outline(**state["outline"])
    body = [SectionResult(**state["sections"][str(i)]) for i in range(len(outline.sections))]
    parts, dropped = clean_parts([SectionResult(**state["intro"]), *body, SectionResult(**state["conclusion"])])
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
    trace["postcheck_dropped"] = dropped
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
