"""`cpm serve`: an OpenAI-compatible HTTP server (Starlette) on the in-process engine.

Endpoints: GET /v1/models, POST /v1/chat/completions (stream, tools, tool_choice, response_format),
POST /v1/completions (text in, text out), POST /v1/embeddings (with an index's embedder, `--index`), GET /health.
GET /metrics (Prometheus text). Every request, streamed or not, with tools, grammar or plain, is submitted to the
engine's scheduler, which batches all running sequences step by step (continuous batching over the paged KV
cache); at most `max_waiting` + the engine's max_running requests are held at once, past that the answer is 503
with Retry-After (tui/serve_admission.py). Generation runs in worker threads so the event loop keeps accepting
connections and noticing disconnects; a request whose client has gone is cancelled and its KV blocks freed,
streamed or not. Bodies are checked by the pydantic models of tui/serve_requests.py and refused as
OpenAI refuses: {"error": {"message", "type", "param", "code"}}, a JSON 404 for unknown routes too.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from agents.chat.engine_runner import ChatReply, ChatRequest, EngineRunner, Prepared, Reasoning
from agents.chat.messages import tool_calls_to_openai
from agents.chat.tooling import to_openai_tools
from tui.serve_admission import Admission, Metrics, Ticket, executor_for
from tui.serve_common import (ClosingStream, cancel_on_disconnect, check_model, check_prompt_fits, drain_in_thread,
                              error_response, new_id, openai_errors, sse)
from tui.serve_requests import ChatCompletionBody, RequestError, read_body, validate
from tui.serve_text import embeddings_route, text_completions_route


def create_app(runner: EngineRunner, model_name: str, embedder=None, max_waiting: int = 64) -> Starlette:
    """The ASGI app serving `runner`'s engine under the model id `model_name` (and `embedder`, a
    retrieval.embed.Embedder, on /v1/embeddings when given). Up to the engine's max_running requests decode
    together and `max_waiting` more wait in its scheduler; past that, 503."""
    running = getattr(getattr(runner.engine, "loop", None), "scheduler", None)
    admission = Admission(max_waiting + (running.max_running if running is not None else 1))
    metrics_text = Metrics(runner.engine, admission, model_name)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        asyncio.get_running_loop().set_default_executor(executor_for(admission))
        yield

    async def models(_: Request) -> JSONResponse:
        ids = [model_name] + ([embedder.name] if embedder is not None else [])
        return JSONResponse({"object": "list", "data": [
            {"id": i, "object": "model", "created": created, "owned_by": "cpm-suite"} for i in ids]})

    async def health(_: Request) -> JSONResponse:
        s = runner.engine.stats()
        return JSONResponse({"status": "ok", "model": model_name, "running": s.running, "waiting": s.waiting,
                             "admitted": admission.active, "limit": admission.limit,
                             "kv_blocks_used": s.kv_blocks_used, "kv_blocks_total": s.kv_blocks_total,
                             "steps": s.steps, "generated_tokens": s.generated_tokens})

    async def metrics(_: Request) -> PlainTextResponse:
        return PlainTextResponse(metrics_text.render(), media_type="text/plain; version=0.0.4")

    @openai_errors
    async def chat_completions(request: Request):
        body = validate(ChatCompletionBody, await read_body(request))
        body.check_tool_choice()
        check_model(body.model, [model_name])
        prep = await asyncio.to_thread(runner.prepare, chat_request(body))
        check_prompt_fits(len(prep.prompt_ids), runner.engine.max_seq_len, "messages")
        ticket = admission.enter()
        if body.stream:
            return ClosingStream(_chat_events(runner, ticket, prep, model_name, body.include_usage),
                                 on_close=ticket.release)
        try:
            async with cancel_on_disconnect(request) as cancel:
                reply = await run_prepared(runner, prep, cancel)
        finally:
            ticket.release()
        if reply is None:  # the client has gone; nobody reads this
            return error_response("the client closed the request", 499)
        return JSONResponse(chat_completion(reply, model_name))

    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return error_response(f"{request.method} is not allowed on {request.url.path}", 405,
                                  code="method_not_allowed")
        return error_response(f"Unknown request URL: {request.method} {request.url.path}. This server serves "
                              "/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings and /health.",
                              exc.status_code, code="unknown_url")

    return Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", text_completions_route(runner, admission, model_name), methods=["POST"]),
        Route("/v1/embeddings", embeddings_route(embedder), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ], exception_handlers={404: not_found, 405: not_found}, lifespan=lifespan)


def chat_request(body: ChatCompletionBody) -> ChatRequest:
    """The runner's request for a checked body."""
    temperature, top_p = body.sampling()
    tools = to_openai_tools([t.model_dump(by_alias=True, exclude_none=True) for t in body.tools or []])
    choice = body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice
    fmt = body.response_format.model_dump(by_alias=True, exclude_none=True) if body.response_format else None
    return ChatRequest(messages=[m.as_openai() for m in body.messages], tools=tools, tool_choice=choice,
                       response_format=fmt, parallel_tool_calls=body.parallel_tool_calls, max_tokens=body.budget(),
                       temperature=temperature, top_p=top_p, seed=body.seed, stop=body.stop_list())


async def run_prepared(runner: EngineRunner, prep: Prepared, cancel: threading.Event) -> ChatReply | None:
    """One request through the runner's stream (the engine schedules it beside the others); a set `cancel`
    (its client has gone) cancels it at its next piece and frees its KV blocks. None when cancelled."""
    reply = None
    async for item in drain_in_thread(lambda: runner.stream_prepared(prep), cancel):
        if isinstance(item, Exception):
            raise item
        if isinstance(item, ChatReply):
            reply = item
    return reply


async def _chat_events(runner: EngineRunner, ticket: Ticket, prep, model_name: str, include_usage: bool):
    """SSE events of one streamed chat completion; leaving mid-stream closes this generator, which cancels the
    request in the engine."""
    cid, created = new_id("chatcmpl"), int(time.time())
    try:
        yield sse(_chunk(cid, created, model_name, {"role": "assistant", "content": ""}))
        async for item in drain_in_thread(lambda: runner.stream_prepared(prep), threading.Event()):
            if isinstance(item, Exception):  # reported in-stream: the 200 header is already sent
                yield sse({"error": {"message": str(item), "type": "server_error", "param": None, "code": None}})
            elif isinstance(item, Reasoning):  # think-then-call, or the model's own <think> block
                yield sse(_chunk(cid, created, model_name, {"reasoning_content": str(item)}))
            elif isinstance(item, str):
                yield sse(_chunk(cid, created, model_name, {"content": item}))
            else:
                for event in _final_events(item, cid, created, model_name, include_usage):
                    yield sse(event)
        yield "data: [DONE]\n\n"
    finally:
        ticket.release()


def finish_reason(reply: ChatReply) -> str:
    """`tool_calls` whenever the reply carries calls, as OpenAI and vLLM report it (the runner says `length`
    when parallel calls ran into max_tokens)."""
    return "tool_calls" if reply.parsed.tool_calls else reply.finish_reason


def _final_events(reply: ChatReply, cid: str, created: int, model: str, include_usage: bool) -> list[dict]:
    out = []
    calls = tool_calls_to_openai(reply.parsed.tool_calls)
    if calls:
        out.append(_chunk(cid, created, model, {"tool_calls": [dict(c, index=i) for i, c in enumerate(calls)]}))
    elif invalid_text := _invalid_text(reply):
        out.append(_chunk(cid, created, model, {"content": invalid_text}))
    out.append(_chunk(cid, created, model, {}, finish_reason=finish_reason(reply)))
    if include_usage:
        out.append({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": _usage(reply)})
    return out


def chat_completion(reply: ChatReply, model: str) -> dict:
    """The non-streamed body. With tool calls, `content` is the text written beside them or null; a call cut
    off after valid ones (parallel calls ending at max_tokens) is dropped rather than shown as the answer."""
    calls = tool_calls_to_openai(reply.parsed.tool_calls)
    content = reply.parsed.content.strip() if calls else reply.parsed.content + _invalid_text(reply)
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if getattr(reply.parsed, "reasoning", None):
        message["reasoning_content"] = reply.parsed.reasoning
    if calls:
        message["tool_calls"] = calls
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(reply), "logprobs": None}],
            "usage": _usage(reply)}


def _invalid_text(reply: ChatReply) -> str:
    """Malformed calls go back as the raw text the model wrote: OpenAI's schema has no place for them, and a
    client running the same parser (ChatOpenAICompatible does) recovers them with their error messages."""
    raws = [c.get("args") or "" for c in reply.parsed.invalid_tool_calls]
    return ("\n" if reply.parsed.content and raws else "") + "\n".join(raws)


def _chunk(cid: str, created: int, model: str, delta: dict, finish_reason: str | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}


def _usage(reply: ChatReply) -> dict:
    """OpenAI's usage block; `prompt_tokens_details.cached_tokens` counts the prompt served by the prefix cache."""
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.telemetry.cached_tokens}}


class BackgroundServer:
    """Runs an app with uvicorn in a daemon thread (tests, the TUI); `stop()` shuts it down."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8000):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://{host}:{port}/v1"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


__all__ = ["BackgroundServer", "RequestError", "create_app", "chat_request", "chat_completion"]
