"""Run or resume a survey with the SQLite checkpointer, yielding events for the CLI and the TUI.

Events are the typed `agents.events.SurveyEvent`s: `SurveyStarted`, `OutlineReady`, `StageStarted`,
`SectionToken`, `SurveyStep` (one model call's engine telemetry), `Retry`, `SectionDone`, `NodeFinished` (a graph
node finished), `SectionsSaved` (sections now in the checkpoint: a resume will not redo them) and finally
`SurveyDone` (with the final state's markdown, bibtex and trace, whose `telemetry` holds every step and their
total).
"""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agents.events import NodeFinished, SectionDone, SectionsSaved, SurveyDone, SurveyEvent, SurveyStarted
from agents.survey.configuration import Configuration
from agents.survey.graph import build_graph
from agents.survey.state import SurveyContext
from survey.errors import SurveyError


def new_thread_id(topic: str) -> str:
    slug = "-".join(re.findall(r"[a-z0-9]+", topic.lower())[:4]) or "survey"
    return f"{slug}-{uuid.uuid4().hex[:8]}"


def embedder_for(retriever: Any) -> Callable[[list[str]], Any] | None:
    """The retriever's own embedder as `texts -> unit vectors`, to group papers by topic; None when the
    retriever is not a `retrieval.Index` (the graph then groups by TF-IDF vectors)."""
    manifest = getattr(retriever, "manifest", None)
    if not isinstance(manifest, dict) or "embedder" not in manifest:
        return None
    from retrieval.embed import Embedder

    spec = manifest["embedder"]

    def embed(texts: list[str]):
        # built at first use (a resumed run past its plan never needs it); the model itself is cached
        return Embedder(spec["name"], getattr(retriever, "device", "auto"), spec.get("max_seq_length")).encode(texts)

    return embed


async def stream_survey(topic: str | None, *, model: Any, retriever: Any, db_path: Path,
                        settings: Configuration | None = None, thread_id: str | None = None,
                        resume: bool = False,
                        embed: Callable[[list[str]], Any] | None = None) -> AsyncIterator[SurveyEvent]:
    """Write (or with `resume`, continue) the survey of `thread_id`, yielding progress events.

    `embed` (texts -> unit vectors) groups the retrieved papers into sections; by default the retriever's own
    embedder (`embedder_for`)."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:8]
    async with AsyncSqliteSaver.from_conn_string(str(db_path)) as saver:
        graph = build_graph().compile(checkpointer=saver)
        if resume:
            if not thread_id:
                raise SurveyError("--resume needs the THREAD_ID that `cpm survey` printed when it started")
            snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
            if not snapshot.values:
                raise SurveyError(f"no survey {thread_id!r} in {db_path}; check the id, or the --checkpoints file")
            settings = Configuration(**snapshot.values["settings"])
            topic = snapshot.values["topic"]
            graph_input = None
        else:
            if not topic or not topic.strip():
                raise SurveyError("give a survey topic, e.g. cpm survey \"speculative decoding\" --index DIR")
            settings = settings or Configuration()
            thread_id = thread_id or new_thread_id(topic)
            graph_input = {"topic": topic.strip(), "thread_id": thread_id, "settings": settings.model_dump()}
        config = {"configurable": {"thread_id": thread_id, **settings.model_dump()}, "recursion_limit": 200}
        done_before = []
        if resume:
            done_before = sorted(int(k) for k in snapshot.values.get("sections", {}))
        yield SurveyStarted(thread_id=thread_id, topic=topic, run_id=run_id, resume=resume,
                            settings=settings.model_dump(), sections_done=done_before,
                            outline=snapshot.values.get("outline") if resume else None)
        start = time.perf_counter()
        context = SurveyContext(model=model, retriever=retriever, run_id=run_id,
                                embed=embed or embedder_for(retriever))
        finished: list[int] = []  # sections done in this run, not yet known to be checkpointed
        # durability="sync": a step's checkpoint is on disk before the next step starts, so `saved` is true
        # even if the process is killed right after it.
        async for mode, chunk in graph.astream(graph_input, config, context=context, durability="sync",
                                               stream_mode=["updates", "custom"]):
            if mode == "custom":
                if isinstance(chunk, SectionDone):
                    finished.append(chunk.section)
                yield chunk
                continue
            for node in chunk:
                yield NodeFinished(node=node)
                # `dispatch` runs in the step after the sections it follows, so their checkpoint is on disk.
                if node == "dispatch" and finished:
                    yield SectionsSaved(sections=sorted(finished))
                    finished = []
        final = await graph.aget_state(config)
        yield SurveyDone(thread_id=thread_id, run_id=run_id, wall_s=time.perf_counter() - start,
                         markdown=final.values.get("markdown"), bibtex=final.values.get("bibtex"),
                         trace=final.values.get("trace"))
