"""Generate model outputs for BFCL cases through the chat-model layer, store them resumably, then score.

Two modes (a flag):
- constrained: BFCL's function-calling (FC) mode. The functions are bound as OpenAI-style tools
  (tools.to_openai_tools); the chat layer constrains each call to a bound tool's schema with its grammar
  and returns `AIMessage.tool_calls`, stored as BFCL's FC result `[{name: "{json args}"}]` (`[]`: no call).
  `tool_choice` "auto": the model decides between a call and an answer; "required": categories with answers
  must call (one call unless the model opens another, as parallel calls are allowed), relevance categories
  stay "auto" (a forced call there is wrong by construction). The report says which.
- free: BFCL's prompting mode. No grammar and no bound tools: the functions are described in the system
  prompt (prompts.py), the reply text is stored as is and decoded like BFCL's prompting results.
Results go to OUT/bfcl_results.jsonl, one line per case as it finishes; a rerun skips ids already there.
The model is built as `cpm serve` builds it (same loader, quantisation, grammar and `--spec` drafter) and the
report's `run.serving` records that set-up (agents/bfcl/setup.py).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from agents.bfcl.data import BfclCase, category_of, load_cases
from agents.bfcl.prompts import free_messages
from agents.bfcl.score import load_results, score_records
from agents.bfcl.setup import serving_setup
from agents.bfcl.tools import to_openai_tools
from agents.errors import AgentError

RESULTS_NAME = "bfcl_results.jsonl"


@dataclass
class GenerationConfig:
    """How to build and run the chat model; None fields fall back to make_chat_model's defaults."""

    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    constrained: bool = False
    tool_choice: str = "auto"  # constrained mode: "auto" | "required" (relevance categories: always auto)
    max_tokens: int = 256
    spec: str = "none"  # speculative drafter of the in-process engine (SamplingParams.spec)
    device: str = "auto"  # in-process engine device, as `cpm serve --device`

    def __post_init__(self) -> None:
        # the backend and model the run will use, so that records and the report name them (not null)
        from agents.chat.factory import resolve_backend

        self.backend, self.model, self.base_url = resolve_backend(self.backend, self.model, self.base_url)

        if self.tool_choice not in ("auto", "required"):
            raise AgentError(f"tool_choice must be auto or required, got {self.tool_choice!r}")

    @property
    def mode(self) -> str:
        return "constrained" if self.constrained else "free"

    @property
    def choice_label(self) -> str | None:
        """What the report says about tool_choice (None in free mode, where no tools are bound)."""
        if not self.constrained:
            return None
        return "required (irrelevance: auto)" if self.tool_choice == "required" else "auto"

    def choice_for(self, category: str) -> str:
        from agents.bfcl.data import is_relevance

        return "auto" if is_relevance(category) else self.tool_choice

    def describe(self) -> str:
        spec = f", spec {self.spec}" if self.spec != "none" else ""
        mode = f"{self.mode}, tool_choice {self.choice_label}" if self.constrained else self.mode
        return f"{self.model or 'default model'} ({self.backend or 'default backend'}), {mode}{spec}"

    def make_model(self):
        from agents.chat import make_chat_model

        kwargs = {k: v for k, v in (("backend", self.backend), ("model", self.model), ("base_url", self.base_url),
                                    ("api_key", self.api_key)) if v is not None}
        chat = make_chat_model(**kwargs)
        if getattr(chat, "engine", None) is None:
            if self.spec != "none" or self.device != "auto":
                raise AgentError("--spec and --device set up the in-process engine; a server decides its own")
            return chat
        # The engine backend: load on the asked device (make_chat_model loads on "auto") and draft with --spec.
        if self.device != "auto" and str(chat.engine.device) != self.device:
            from agents.chat import ChatEngine

            chat = ChatEngine.from_model(chat.model_name, device=self.device)
        return chat.model_copy(update={"spec": self.spec})


def _calls_as_result(tool_calls: list[dict]) -> list[dict]:
    return [{call["name"]: json.dumps(call.get("args") or {}, ensure_ascii=False)} for call in tool_calls]


def run_case(chat, case: BfclCase, config: GenerationConfig) -> dict:
    """One model turn for one case -> a result record (BFCL result format plus what we saw)."""
    if len(case.question) != 1:
        raise AgentError(f"{case.id}: {len(case.question)} turns; only single-turn categories are supported")
    start = time.perf_counter()
    if config.constrained:
        bound = chat.bind_tools(to_openai_tools(case.functions), tool_choice=config.choice_for(case.category))
        message = bound.invoke(case.question[0], max_tokens=config.max_tokens)
        result = _calls_as_result(message.tool_calls)
    else:
        message = chat.invoke(free_messages(case.question[0], case.functions), max_tokens=config.max_tokens)
        result = message.content if isinstance(message.content, str) else json.dumps(message.content)
    usage = getattr(message, "usage_metadata", None) or {}
    return {"id": case.id, "category": case.category, "mode": config.mode, "model": config.model, "spec": config.spec,
            "tool_choice": config.choice_for(case.category) if config.constrained else None,
            "result": result, "raw": message.content,
            "invalid_tool_calls": [dict(c) for c in getattr(message, "invalid_tool_calls", [])],
            "finish_reason": (message.response_metadata or {}).get("finish_reason"),
            "output_tokens": usage.get("output_tokens"), "latency_s": round(time.perf_counter() - start, 3)}


def _check_resume(records: dict[str, dict], config: GenerationConfig, path: Path) -> None:
    for record in records.values():
        choice = config.choice_for(category_of(str(record["id"]))) if config.constrained else None
        # files from before --tool-choice: constrained runs were all "auto"
        recorded = record.get("tool_choice", "auto" if record.get("mode") == "constrained" else None)
        if (record.get("mode"), record.get("model"), record.get("spec", "none"), recorded) != \
                (config.mode, config.model, config.spec, choice):
            raise AgentError(f"{path} holds results of another run (mode {record.get('mode')}, model "
                             f"{record.get('model')}, spec {record.get('spec', 'none')}, tool_choice "
                             f"{record.get('tool_choice')}); pass another --out to start a new one")


# Cases generated at once: the engine's scheduler decodes concurrent requests together (continuous batching), so
# four cases in flight cost little more per step than one. run_case only reads `chat` and `config`; records are
# written by the calling thread, in the cases' order.
WORKERS = 4


def _map_cases(fn: Callable, cases: list, workers: int = WORKERS):
    """fn over cases, results in order. On Ctrl-C the cases not yet started are dropped (those running finish
    their current generation), so the resume command prints at once."""
    if workers <= 1:
        yield from map(fn, cases)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="bfcl-case")
    try:
        yield from pool.map(fn, cases)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def generate(cases: list[BfclCase], out_dir: Path, config: GenerationConfig, chat=None,
             progress: Callable[[int, int, str], None] | None = None) -> tuple[dict[str, dict], Any]:
    """Run every case not yet in OUT/bfcl_results.jsonl, appending as each finishes; returns all records and
    the chat model (None when every case was already done)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_NAME
    records = load_results(path) if path.exists() else {}
    _check_resume(records, config, path)
    todo = [c for c in cases if c.id not in records]
    if todo and chat is None:
        chat = config.make_model()
    with open(path, "a", encoding="utf-8") as f:
        if progress:
            progress(0, len(todo), "")
        for n, (case, record) in enumerate(zip(todo, _map_cases(lambda c: run_case(chat, c, config), todo)), 1):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()   # a crash or Ctrl-C loses at most the case in flight
            records[case.id] = record
            if progress:
                progress(n, len(todo), case.id)
    return records, chat


def generate_and_score(data_dir: Path, out_dir: Path, config: GenerationConfig, categories: list[str] | None = None,
                       limit: int | None = None, name_mode: str = "either", chat=None,
                       progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Generate for the selected cases, then score exactly those; the report also records the run settings."""
    cases = load_cases(data_dir, categories, limit)
    records, chat = generate(cases, out_dir, config, chat, progress)
    report = score_records(cases, records, name_mode)
    settings = {k: v for k, v in asdict(config).items() if k != "api_key"}   # never write the key to disk
    serving = serving_setup(chat, config.mode, config.spec) if chat is not None else \
        {"note": "every case was already in the results file: no model was loaded in this run"}
    report["run"] = {**settings, "mode": config.mode, "tool_choice": config.choice_label, "limit": limit,
                     "serving": serving,
                     "categories": sorted({c.category for c in cases}), "results": str(Path(out_dir) / RESULTS_NAME)}
    return report
