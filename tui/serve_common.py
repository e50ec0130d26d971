"""Pieces every `cpm serve` route shares: OpenAI-style errors, SSE framing, running a blocking generator in a
worker thread with cancellation, and noticing that a client has gone.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import wraps

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from agents.errors import AgentError
from engine.errors import EngineError
from tui.serve_requests import RequestError

log = logging.getLogger("cpm.serve")
_END = object()


def error_response(message: str, status: int, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


def openai_errors(handler: Callable) -> Callable:
    """Every outcome of a route is an HTTP answer: a refused request is a 4xx naming its field, a bug a 500 JSON
    body (logged with its traceback), so uvicorn never drops the keep-alive connection under the client."""

    @wraps(handler)
    async def route(request: Request):
        try:
            return await handler(request)
        except RequestError as exc:
            response = error_response(str(exc), exc.status, exc.param, exc.code)
            if exc.status == 503:  # busy: tell well-behaved clients (openai, httpx retries) when to come back
                response.headers["Retry-After"] = "1"
            return response
        except (AgentError, EngineError, ValueError) as exc:  # the request's content is wrong
            return error_response(str(exc), 400)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response("internal server error (see the server log)", 500)

    return route


def check_model(asked: str | None, served: list[str]) -> None:
    if asked not in (None, "", "default", *served):
        raise RequestError(f"The model {asked!r} does not exist; this server serves {', '.join(map(repr, served))}",
                           404, "model", "model_not_found")


def check_prompt_fits(prompt_tokens: int, max_seq_len: int, param: str) -> None:
    """Refused before any response starts, so a too-long prompt is the same 400 streamed or not."""
    if prompt_tokens >= max_seq_len:
        raise RequestError(f"This model's maximum context length is {max_seq_len} tokens; the prompt has "
                           f"{prompt_tokens} tokens. Shorten it.", param=param, code="context_length_exceeded")


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


async def drain_in_thread(make: Callable[[], Iterator], cancel: threading.Event) -> AsyncIterator:
    """The items of a blocking iterator built and run in a worker thread; an exception it raises arrives as an
    item. Setting `cancel` (or leaving the loop) stops the thread at its next item and closes the iterator, so
    the engine is free again when this generator is closed."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()

    def produce() -> None:
        it = None
        try:
            it = make()
            for item in it:
                if cancel.is_set():
                    break
                loop.call_soon_threadsafe(items.put_nowait, item)
        except Exception as exc:
            loop.call_soon_threadsafe(items.put_nowait, exc)
        finally:
            if it is not None and hasattr(it, "close"):
                it.close()
            loop.call_soon_threadsafe(items.put_nowait, _END)

    worker = loop.run_in_executor(None, produce)
    try:
        while (item := await items.get()) is not _END:
            yield item
    finally:
        cancel.set()
        await asyncio.shield(worker)


@asynccontextmanager
async def cancel_on_disconnect(request: Request):
    """An Event set when the client disconnects while the body of the `async with` runs (the request body has
    been read by then, so the next ASGI message is the disconnect)."""
    cancel = threading.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        cancel.set()

    watcher = asyncio.create_task(watch())
    try:
        yield cancel
    finally:
        watcher.cancel()


class ClosingStream(StreamingResponse):
    """Closes its body generator when the response ends, however it ends.

    When the client disconnects (even right after `[DONE]`), Starlette cancels the send and leaves the async
    generator suspended at a `yield`; its `finally` (stop decoding, free the queue) would then wait for garbage
    collection and every later request would hang behind it.
    """

    def __init__(self, body, on_close: Callable[[], None] | None = None):
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close  # runs even when the body never started (its own `finally` would not)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            if self.on_close is not None:
                self.on_close()
