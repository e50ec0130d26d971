"""`ChatOpenAICompatible`: the chat-model interface over any OpenAI-compatible `/v1/chat/completions` server.

vLLM, SGLang, llama.cpp's server and `cpm serve` all qualify. Tools go out in OpenAI's shape; when a server
returns a tool call as plain text (no tool parser configured there), the reply is run through the same parser
the engine uses, so a call written as `<tool_call>...</tool_call>` still arrives on `tool_calls`. A forced call
(`tool_choice` required or named) is made to work on servers with weaker tool support (agents/chat/forced_calls.py)
and is not streamed: it arrives as one chunk, the call.
"""
from __future__ import annotations

import json
from typing import Any, AsyncIterator, Iterator, Sequence

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from agents.chat.forced_calls import call_from_json, is_forced, json_call_body, wire_tools_and_choice
from agents.chat.http_transport import BackendError, Transport
from agents.chat.messages import from_openai_message, to_openai_messages
from agents.chat.toolcalls import parse_tool_calls
from agents.chat.tooling import normalize_tool_choice, to_openai_tools, tool_binding, tool_names

__all__ = ["ChatOpenAICompatible", "BackendError"]

_PASS_THROUGH = {"response_format", "parallel_tool_calls", "max_tokens", "temperature", "top_p", "seed",
                 "presence_penalty", "frequency_penalty", "n", "logit_bias", "user"}


class ChatOpenAICompatible(BaseChatModel):
    """Chat model for OpenAI-compatible HTTP servers: `base_url` like http://127.0.0.1:8000/v1, or several
    (a list or a comma list) that share the requests (least busy first, a failed try retried on another)."""

    model_config = ConfigDict(populate_by_name=True)

    base_url: str | list[str] = "http://127.0.0.1:8000/v1"
    model_name: str = Field(default="default", alias="model")
    api_key: SecretStr | None = None
    timeout: float = 120.0
    max_retries: int = 2
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    extra_body: dict | None = None
    _transport: Transport = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        key = self.api_key.get_secret_value() if self.api_key else None
        self._transport = Transport(self.base_url, key, self.timeout, self.max_retries)

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model_name": self.model_name}

    def list_models(self) -> list[str]:
        """Model ids the server offers (`GET /models`)."""
        return [m["id"] for m in self._transport.request_json("GET", "/models").get("data", [])]

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any):
        return self.bind(**tool_binding(tools, tool_choice, kwargs))

    # ---- langchain hooks -------------------------------------------------------------------------------
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return _as_result(self._reply(self._payload(messages, stop, kwargs, stream=False)))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return _as_result(await self._areply(self._payload(messages, stop, kwargs, stream=False)))

    def _reply(self, body: dict) -> AIMessage:
        message = self._message(self._transport.request_json("POST", "/chat/completions", body, _has_choices), body)
        if is_forced(body) and not message.tool_calls:  # the server wrote prose or a broken call: ask under a schema
            again = json_call_body(body)
            retry = self._message(self._transport.request_json("POST", "/chat/completions", again, _has_choices), again)
            message = _forced_retry(message, retry, body)
        return message

    async def _areply(self, body: dict) -> AIMessage:
        data = await self._transport.arequest_json("POST", "/chat/completions", body, _has_choices)
        message = self._message(data, body)
        if is_forced(body) and not message.tool_calls:
            again = json_call_body(body)
            data = await self._transport.arequest_json("POST", "/chat/completions", again, _has_choices)
            message = _forced_retry(message, self._message(data, again), body)
        return message

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        body = self._payload(messages, stop, kwargs, stream=True)
        if is_forced(body):
            yield _as_chunk(self._reply(_unstreamed(body)))
            return
        for event in self._transport.stream_events("/chat/completions", body):
            chunk = self._chunk(event)
            if chunk is not None:
                if run_manager and chunk.text:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        body = self._payload(messages, stop, kwargs, stream=True)
        if is_forced(body):
            yield _as_chunk(await self._areply(_unstreamed(body)))
            return
        async for event in self._transport.astream_events("/chat/completions", body):
            chunk = self._chunk(event)
            if chunk is not None:
                if run_manager and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    # ---- wire format -----------------------------------------------------------------------------------
    def _payload(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict, stream: bool) -> dict:
        body: dict[str, Any] = {"model": self.model_name, "messages": to_openai_messages(messages)}
        for key in ("temperature", "max_tokens", "top_p", "seed"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if stop or self.stop:
            body["stop"] = list(stop or self.stop)
        tools = to_openai_tools(kwargs.get("tools"))
        if tools:
            body["tools"] = tools
            choice = normalize_tool_choice(kwargs.get("tool_choice"), tools)
            body["tools"], body["tool_choice"] = wire_tools_and_choice(tools, choice)
        body.update({k: v for k, v in kwargs.items() if k in _PASS_THROUGH and v is not None})
        body.update(self.extra_body or {})
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _message(self, data: dict, body: dict) -> AIMessage:
        choice = data["choices"][0]
        meta = {"finish_reason": choice.get("finish_reason"), "model_name": data.get("model", self.model_name)}
        message = from_openai_message(choice.get("message") or {}, response_metadata=meta,
                                      usage_metadata=_usage(data.get("usage")))
        if body.get("tools") and not message.tool_calls and not message.invalid_tool_calls:
            message = _parse_text_calls(message, tool_names(body["tools"]))
        return message

    def _chunk(self, event: dict) -> ChatGenerationChunk | None:
        usage = _usage(event.get("usage"))
        choices = event.get("choices") or []
        if not choices:
            return ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage)) if usage else None
        choice = choices[0]
        delta = choice.get("delta") or {}
        calls = [tool_call_chunk(name=(c.get("function") or {}).get("name"),
                                 args=(c.get("function") or {}).get("arguments"), id=c.get("id"),
                                 index=c.get("index", i))
                 for i, c in enumerate(delta.get("tool_calls") or [])]
        meta = {"finish_reason": choice["finish_reason"], "model_name": event.get("model", self.model_name)} \
            if choice.get("finish_reason") else {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")  # vLLM/SGLang reasoning parsers
        return ChatGenerationChunk(message=AIMessageChunk(content=delta.get("content") or "", tool_call_chunks=calls,
                                                          usage_metadata=usage, response_metadata=meta,
                                                          additional_kwargs={"reasoning_content": reasoning}
                                                          if reasoning else {}))


def _has_choices(data: dict, url: str) -> None:
    """A completion without choices is a broken server: retried like one (on another server when there is)."""
    if not isinstance(data, dict) or not data.get("choices") or not isinstance(data["choices"][0], dict):
        raise BackendError(f"{url} answered without choices: {str(data)[:200]}", retryable=True)


def _as_result(message: AIMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])


def _unstreamed(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


def _forced_retry(first: AIMessage, retry: AIMessage, body: dict) -> AIMessage:
    """The retry's call, with the usage of both requests."""
    message = call_from_json(retry, tool_names(body["tools"]))
    usage = [u for u in (first.usage_metadata, retry.usage_metadata) if u]
    if usage:
        message.usage_metadata = {k: sum(u.get(k, 0) for u in usage)
                                  for k in ("input_tokens", "output_tokens", "total_tokens")}
    return message


def _as_chunk(message: AIMessage) -> ChatGenerationChunk:
    """A whole reply as one stream chunk; invalid calls keep their raw text as args (they stay invalid)."""
    calls = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c["id"], index=i)
             for i, c in enumerate(message.tool_calls)]
    calls += [tool_call_chunk(name=c.get("name"), args=c.get("args"), id=c.get("id"), index=len(calls) + i)
              for i, c in enumerate(message.invalid_tool_calls)]
    return ChatGenerationChunk(message=AIMessageChunk(
        content=message.content, tool_call_chunks=calls, usage_metadata=message.usage_metadata,
        response_metadata=message.response_metadata, additional_kwargs=message.additional_kwargs))


def _parse_text_calls(message: AIMessage, names: list[str]) -> AIMessage:
    parsed = parse_tool_calls(str(message.content), names)
    if not parsed.tool_calls and not parsed.invalid_tool_calls:
        return message
    return AIMessage(content=parsed.content, tool_calls=parsed.tool_calls, invalid_tool_calls=parsed.invalid_tool_calls,
                     response_metadata=message.response_metadata, usage_metadata=message.usage_metadata,
                     additional_kwargs=message.additional_kwargs)


def _usage(usage: dict | None) -> dict | None:
    if not usage:
        return None
    prompt, completion = usage.get("prompt_tokens", 0) or 0, usage.get("completion_tokens", 0) or 0
    return {"input_tokens": prompt, "output_tokens": completion,
            "total_tokens": usage.get("total_tokens") or prompt + completion}
