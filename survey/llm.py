"""One model call: stream tokens to a callback, count usage, retry a failing backend a bounded number of times.

The model is any langchain-core BaseChatModel (the in-process engine or a remote server), so its failures
have no common type; every `Exception` from the call is treated as a backend failure, retried after a short
pause and reported in the Usage. Cancellation (Ctrl-C, task cancel) is a BaseException and passes through.

Each call's engine telemetry (the chat model's `response_metadata["telemetry"]`, see agents/chat/telemetry.py)
is kept in `Usage.steps`; a backend that reports none gets one built from its usage counts, with the time to the
first token as the prefill time.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage

from survey.errors import SurveyError
from survey.section import Usage

OnToken = Callable[[str], None]


class BackendFailed(SurveyError):
    """The chat backend failed on every attempt."""


async def _stream_once(model: BaseChatModel, messages: list, on_token: OnToken | None,
                       max_tokens: int | None, options: dict) -> tuple[str, Usage]:
    start = time.perf_counter()
    first_token_s: float | None = None
    total: AIMessageChunk | None = None
    chunks = 0
    # max_tokens is the per-call option both chat backends accept; a model without it ignores the kwarg.
    # response_format (a JSON schema) is passed the same way; the engine decodes it under a grammar.
    async for chunk in model.astream(messages, **({"max_tokens": max_tokens} if max_tokens else {}), **options):
        total = chunk if total is None else total + chunk
        text = chunk.content if isinstance(chunk.content, str) else ""
        if text:
            chunks += 1
            first_token_s = first_token_s or time.perf_counter() - start
            if on_token:
                on_token(text)
    text = total.content if total is not None and isinstance(total.content, str) else ""
    meta = getattr(total, "usage_metadata", None) or {}
    elapsed = time.perf_counter() - start
    # Without usage metadata, one streamed chunk per token is the best count available.
    usage = Usage(calls=1, input_tokens=int(meta.get("input_tokens", 0)),
                  output_tokens=int(meta.get("output_tokens", chunks)), model_s=elapsed)
    step = (getattr(total, "response_metadata", None) or {}).get("telemetry")
    if step is None:
        ttft = first_token_s if first_token_s is not None else elapsed
        step = {"prompt_tokens": usage.input_tokens, "generated_tokens": usage.output_tokens, "prefill_s": ttft,
                "decode_s": elapsed - ttft, "generations": 1, "attention": "unknown"}
    return text, usage.model_copy(update={"steps": [dict(step)]})


async def generate(model: BaseChatModel, system: str, prompt: str, *, on_token: OnToken | None = None,
                   on_retry: Callable[[int, Exception], None] | None = None, retries: int = 2,
                   backoff_s: float = 0.5, max_tokens: int | None = None,
                   response_format: dict | None = None) -> tuple[str, Usage]:
    """Return the model's text and usage; raise BackendFailed after `retries` failed retries.

    `response_format` (OpenAI's `{"type": "json_schema", ...}`) constrains the reply where the backend can.
    """
    options = {"response_format": response_format} if response_format else {}
    messages = [SystemMessage(system), HumanMessage(prompt)]
    errors: list[str] = []
    for attempt in range(retries + 1):
        try:
            text, usage = await _stream_once(model, messages, on_token, max_tokens, options)
            return text, usage.model_copy(update={"retries": attempt, "errors": errors})
        except Exception as exc:  # noqa: BLE001 - any backend failure is retried (see module doc)
            errors.append(f"attempt {attempt + 1}: {type(exc).__name__}: {exc}")
            if on_retry:
                on_retry(attempt + 1, exc)
            if attempt < retries:
                await asyncio.sleep(backoff_s * (attempt + 1))
    raise BackendFailed(f"the chat backend failed {retries + 1} times ({errors[-1]}); fix the backend and "
                        "continue with `cpm survey --resume THREAD_ID`")
