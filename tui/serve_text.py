"""`cpm serve`'s /v1/completions (text in, text out: no chat template, as vLLM and llama.cpp serve it) and
/v1/embeddings (the index's embedder when the server was started with `--index`, else an OpenAI-style 404).
"""
from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse

from tui.serve_common import (ClosingStream, cancel_on_disconnect, check_model, check_prompt_fits, drain_in_thread,
                              error_response, new_id, openai_errors, sse)
from tui.serve_requests import CompletionBody, EmbeddingBody, RequestError, read_body, validate


def text_completions_route(runner, admission, model_name: str) -> Callable:
    engine = runner.engine

    @openai_errors
    async def completions(request: Request):
        body = validate(CompletionBody, await read_body(request))
        check_model(body.model, [model_name])
        ids = await asyncio.to_thread(prompt_ids, engine, body.prompt)
        check_prompt_fits(len(ids), engine.max_seq_len, "prompt")
        params = sampling_params(body)
        echo = (body.prompt if isinstance(body.prompt, str) else engine.tokenizer.decode(ids)) if body.echo else ""
        ticket = admission.enter()
        if body.stream:
            return ClosingStream(_events(engine, ticket, ids, params, echo, model_name, body.include_usage),
                                 on_close=ticket.release)
        result = None
        try:
            async with cancel_on_disconnect(request) as cancel:
                async for item in drain_in_thread(lambda: engine.stream(ids, params), cancel):
                    if isinstance(item, Exception):
                        raise item
                    result = item.result or result
        finally:
            ticket.release()
        if result is None:
            return error_response("the client closed the request", 499)
        return JSONResponse({"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
                             "model": model_name, "choices": [_choice(echo + result.text, result.finish_reason)],
                             "usage": _usage(result)})

    return completions


def prompt_ids(engine, prompt: str | list[int]) -> list[int]:
    """Token ids of a text prompt (the tokenizer's BOS added) or checked ids given directly."""
    if isinstance(prompt, str):
        return engine.tokenizer.encode(prompt, add_special_tokens=True)
    vocab = engine.config.vocab_size
    if any(i >= vocab for i in prompt):
        raise RequestError(f"Invalid 'prompt': token ids must be below the vocabulary size {vocab}", param="prompt",
                           code="invalid_value")
    return list(prompt)


def sampling_params(body: CompletionBody):
    from engine import SamplingParams

    temperature, top_p = body.sampling()
    return SamplingParams(max_tokens=body.budget(), temperature=temperature, top_p=top_p, seed=body.seed,
                          stop=body.stop_list())


async def _events(engine, ticket, ids, params, echo: str, model_name: str, include_usage: bool):
    cid, created = new_id("cmpl"), int(time.time())

    def event(text: str, finish: str | None = None) -> str:
        return sse({"id": cid, "object": "text_completion", "created": created, "model": model_name,
                    "choices": [_choice(text, finish)]})

    try:
        if echo:
            yield event(echo)
        async for item in drain_in_thread(lambda: engine.stream(ids, params), threading.Event()):
            if isinstance(item, Exception):  # reported in-stream: the 200 header is already sent
                yield sse({"error": {"message": str(item), "type": "server_error", "param": None, "code": None}})
                continue
            if item.text:
                yield event(item.text)
            if item.result is not None:
                yield event("", item.result.finish_reason)
                if include_usage:
                    yield sse({"id": cid, "object": "text_completion", "created": created, "model": model_name,
                               "choices": [], "usage": _usage(item.result)})
        yield "data: [DONE]\n\n"
    finally:
        ticket.release()


def _choice(text: str, finish: str | None) -> dict:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


def _usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.decode_tokens,
            "total_tokens": result.prompt_tokens + result.decode_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}


def embeddings_route(embedder) -> Callable:
    """/v1/embeddings on `embedder` (retrieval.embed.Embedder) or, without one, a 404 saying how to get one."""
    lock = asyncio.Lock()  # the sentence-transformers model is one object: one batch at a time

    @openai_errors
    async def embeddings(request: Request):
        body = validate(EmbeddingBody, await read_body(request))
        if embedder is None:
            raise RequestError("This server has no embedding model: start it with `cpm serve --index DIR` to serve "
                               "the index's embedder on /v1/embeddings", 404, "model", "model_not_found")
        check_model(body.model, [embedder.name])
        if body.dimensions is not None and body.dimensions != embedder.dim:
            raise RequestError(f"Invalid 'dimensions': {embedder.name} embeds in {embedder.dim} dimensions only",
                               param="dimensions", code="invalid_value")
        texts = body.texts()
        async with lock:
            vectors, tokens = await asyncio.to_thread(_embed, embedder, texts)
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": embedder.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return embeddings


def _embed(embedder, texts: list[str]) -> tuple[np.ndarray, int]:
    tokens = sum(len(ids) for ids in embedder.model.tokenizer(texts)["input_ids"])
    return embedder.encode(texts), tokens


def _encode(vector: np.ndarray, fmt: str):
    """OpenAI's two encodings: a list of floats, or base64 of the little-endian float32 bytes."""
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
