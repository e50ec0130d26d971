"""`cpm serve`: an OpenAI-compatible HTTP server (Starlette) on the in-process engine.

Endpoints: GET /v1/models, POST /v1/chat/completions (stream, tools, tool_choice, response_format), GET /health.
Requests are served in arrival order (an asyncio.Lock is FIFO); waiting non-streaming requests with the same
sampling settings are decoded together in one batch (tui/serve_batch.py). Generation runs in a worker thread
so the event loop keeps accepting connections and noticing disconnects. Bad requests get OpenAI-style error
JSON: {"error": {"message", "type", "param", "code"}}.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from agents.chat.engine_runner import ChatReply, ChatRequest, EngineRunner, Reasoning
from agents.chat.messages import tool_calls_to_openai
from agents.chat.tooling import to_openai_tools
from agents.errors import AgentError
from engine.errors import EngineError
from tui.serve_batch import Batcher


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI-style error body with `status`."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def create_app(runner: EngineRunner, model_name: str) -> Starlette:
    """The ASGI app serving `runner`'s engine under the model id `model_name`; the engine's max_batch bounds
    how many waiting requests are decoded together."""
    queue = asyncio.Lock()  # FIFO: requests (or batches of them) run one at a time, in the order they arrived
    batcher = Batcher(runner, queue, getattr(runner.engine, "max_batch", 1))
    created = int(time.time())

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": created, "owned_by": "cpm-suite"}]})

    async def health(_: Request) -> JSONResponse:
        stats = batcher.stats
        return JSONResponse({"status": "ok", "model": model_name, "busy": queue.locked(),
                             "max_batch": batcher.max_batch, "batched_requests": stats.requests,
                             "batches": stats.batches, "largest_batch": stats.largest})

    async def completions(request: Request):
        try:
            body = await _json_body(request)
            req, stream, include_usage = _chat_request(body, model_name)
            if stream:
                return await _streaming(runner, queue, req, model_name, include_usage)
            prep = await asyncio.to_thread(runner.prepare, req)
            reply = await batcher.submit(prep)
            return JSONResponse(_completion(reply, model_name))
        except RequestError as exc:
            return _error(str(exc), exc.status, exc.param, exc.code)
        except (AgentError, EngineError, ValueError) as exc:  # the request's content is wrong
            return _error(str(exc), 400)

    return Starlette(routes=[
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])


async def _streaming(runner: EngineRunner, queue: asyncio.Lock, req: ChatRequest, model_name: str,
                     include_usage: bool) -> StreamingResponse:
    """Check the request first (errors answer as JSON, status 400), then stream its pieces as SSE."""
    prep = await asyncio.to_thread(runner.prepare, req)
    loop = asyncio.get_running_loop()

    def produce(items: asyncio.Queue, cancel: threading.Event) -> None:
        try:
            for item in runner.stream_prepared(prep):
                loop.call_soon_threadsafe(items.put_nowait, item)
                if cancel.is_set():  # the client went away: stop decoding
                    break
        except Exception as exc:  # reported in-stream: the 200 header is already sent
            loop.call_soon_threadsafe(items.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(items.put_nowait, None)

    async def events():
        cid, created = _completion_id(), int(time.time())
        items: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        # The queue is taken inside the body, so a client that leaves before the body starts holds nothing.
        async with queue:
            worker = loop.run_in_executor(None, produce, items, cancel)
            try:
                yield _sse(_chunk(cid, created, model_name, {"role": "assistant", "content": ""}))
                while (item := await items.get()) is not None:
                    if isinstance(item, Exception):
                        yield _sse({"error": {"message": str(item), "type": "server_error", "param": None,
                                              "code": None}})
                    elif isinstance(item, Reasoning):  # think-then-call, or the model's own <think> block
                        yield _sse(_chunk(cid, created, model_name, {"reasoning_content": str(item)}))
                    elif isinstance(item, str):
                        yield _sse(_chunk(cid, created, model_name, {"content": item}))
                    else:
                        for event in _final_events(item, cid, created, model_name, include_usage):
                            yield _sse(event)
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()
                await asyncio.shield(worker)  # the engine is free again before the next request starts

    return _ClosingStream(events(), media_type="text/event-stream",
                          headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _ClosingStream(StreamingResponse):
    """Closes its body generator when the response ends, however it ends.

    When the client disconnects (even right after `[DONE]`), Starlette cancels the send and leaves the async
    generator suspended at a `yield`; its `finally` (stop decoding, free the queue) would then wait for garbage
    collection and every later request would hang behind it.
    """

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


def _final_events(reply: ChatReply, cid: str, created: int, model: str, include_usage: bool) -> list[dict]:
    out = []
    invalid_text = _invalid_text(reply)
    if invalid_text:
        out.append(_chunk(cid, created, model, {"content": invalid_text}))
    calls = tool_calls_to_openai(reply.parsed.tool_calls)
    if calls:
        out.append(_chunk(cid, created, model, {"tool_calls": [dict(c, index=i) for i, c in enumerate(calls)]}))
    out.append(_chunk(cid, created, model, {}, finish_reason=reply.finish_reason))
    if include_usage:
        out.append({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": _usage(reply)})
    return out


def _completion(reply: ChatReply, model: str) -> dict:
    content = reply.parsed.content + _invalid_text(reply)
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if getattr(reply.parsed, "reasoning", None):
        message["reasoning_content"] = reply.parsed.reasoning
    if reply.parsed.tool_calls:
        message["tool_calls"] = tool_calls_to_openai(reply.parsed.tool_calls)
    return {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
            "usage": _usage(reply)}


def _invalid_text(reply: ChatReply) -> str:
    """Malformed calls go back as the raw text the model wrote: OpenAI's schema has no place for them, and a
    client running the same parser (ChatOpenAICompatible does) recovers them with their error messages."""
    raws = [c.get("args") or "" for c in reply.parsed.invalid_tool_calls]
    return ("\n" if reply.parsed.content and raws else "") + "\n".join(raws)


def _chat_request(body: dict, model_name: str) -> tuple[ChatRequest, bool, bool]:
    """Validate an OpenAI chat-completions body into a ChatRequest; RequestError names the bad field."""
    model = body.get("model")
    if model not in (None, "", "default", model_name):
        raise RequestError(f"model {model!r} does not exist; this server serves {model_name!r}", 404, "model",
                           "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise RequestError(f"messages[{i}] needs a role of system, user, assistant or tool", param="messages")
        if m["role"] == "developer":
            m["role"] = "system"
        m["content"] = _text(m.get("content"), i)
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported", param="n")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 512
    for key, value in (("max_tokens", max_tokens), ("temperature", body.get("temperature", 0.0)),
                       ("top_p", body.get("top_p", 1.0))):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise RequestError(f"'{key}' must be a non-negative number", param=key)
    req = ChatRequest(
        messages=messages, tools=to_openai_tools(body.get("tools")), tool_choice=body.get("tool_choice"),
        response_format=body.get("response_format"), parallel_tool_calls=body.get("parallel_tool_calls", True),
        max_tokens=int(max_tokens), temperature=float(body.get("temperature") or 0.0),
        top_p=float(body.get("top_p") or 1.0), seed=body.get("seed"), stop=list(stop))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return req, bool(body.get("stream")), include_usage


def _text(content, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(p.get("text", "") for p in content)
    raise RequestError(f"messages[{index}].content must be text (a string or text parts)", param="messages")


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _chunk(cid: str, created: int, model: str, delta: dict, finish_reason: str | None = None) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}


def _usage(reply: ChatReply) -> dict:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def _error(message: str, status: int, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


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
