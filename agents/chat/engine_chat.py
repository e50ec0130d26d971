"""`ChatEngine`: a langchain-core chat model over the in-process `engine.Engine`.

Tool calls come back on `AIMessage.tool_calls`; malformed ones on `AIMessage.invalid_tool_calls` (with an
`error` to show the model). When streaming, langchain rebuilds tool calls from chunks and would drop those
errors, so the last chunk also carries them in `response_metadata["invalid_tool_calls"]`.

Reasoning (think-then-call, or a model that writes `<think>` / `<|thought_start|>` blocks) is kept out of
`content` and the calls: it is in `additional_kwargs["reasoning_content"]`, as langchain's reasoning models put
it. Each reply carries its engine cost in `response_metadata["telemetry"]` (agents.chat.telemetry).
`<tool_response>` tags a small model copies from the prompt are dropped from the answer by the runner, streamed or not.
"""
from __future__ import annotations

import weakref
from typing import Any, Iterator, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from agents.chat.engine_runner import ChatReply, ChatRequest, EngineRunner, Reasoning
from agents.chat.messages import to_openai_messages
from agents.chat.tooling import to_openai_tools, tool_binding

_RUNNERS: "weakref.WeakKeyDictionary[Any, EngineRunner]" = weakref.WeakKeyDictionary()

# Per-call options a caller may pass through `.bind(...)` or `invoke(..., **kwargs)`.
_REQUEST_KEYS = {"tools", "tool_choice", "response_format", "parallel_tool_calls", "max_tokens", "temperature",
                 "top_p", "top_k", "seed", "reasoning", "max_reasoning_tokens", "spec", "repetition_penalty",
                 "no_repeat_ngram_size"}


class ChatEngine(BaseChatModel):
    """Chat model on the embedded engine; `ChatEngine.from_model("smollm2-135m")` loads one."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = Field(exclude=True)
    model_name: str = "engine"
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] | None = None
    constrain: bool = True  # grammar-constrained tool calls and response_format (False only to measure)
    reasoning: str | None = None  # "think" | "thought": reason before answering or calling (engine_runner)
    max_reasoning_tokens: int = 256
    spec: str = "none"  # speculative drafter for every generation: none | prompt-lookup | eagle:DIR
    _runner: EngineRunner = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        # One runner (so one lock) per engine, however many ChatEngines wrap it.
        self._runner = _RUNNERS.get(self.engine) or _RUNNERS.setdefault(self.engine, EngineRunner(self.engine))

    @classmethod
    def from_model(cls, model: str = "smollm2-135m", device: str = "auto", **kwargs) -> "ChatEngine":
        """Load `model` (alias or path) into a new Engine and wrap it."""
        from engine import Engine

        return cls(engine=Engine.load(model, device=device), model_name=model, **kwargs)

    @property
    def runner(self) -> EngineRunner:
        return self._runner

    @property
    def _llm_type(self) -> str:
        return "cpm-engine"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any):
        """Bind tools (functions, pydantic classes, langchain tools or OpenAI dicts); checks tool_choice now."""
        return self.bind(**tool_binding(tools, tool_choice, kwargs))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        reply = self._runner.complete(self._request(messages, stop, kwargs))
        parsed = reply.parsed
        message = AIMessage(content=parsed.content.strip(), tool_calls=parsed.tool_calls,
                            invalid_tool_calls=parsed.invalid_tool_calls, usage_metadata=_usage(reply),
                            response_metadata=self._metadata(reply), additional_kwargs=_reasoning(parsed.reasoning))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for item in self._runner.stream(self._request(messages, stop, kwargs)):
            if isinstance(item, Reasoning):  # no on_llm_new_token: reasoning is not answer text
                yield ChatGenerationChunk(message=AIMessageChunk(content="", additional_kwargs=_reasoning(item)))
                continue
            if isinstance(item, str):
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=item))
                if run_manager:
                    run_manager.on_llm_new_token(item, chunk=chunk)
                yield chunk
                continue
            calls = [tool_call_chunk(name=c["name"], args=_json(c["args"]), id=c["id"], index=i)
                     for i, c in enumerate(item.parsed.tool_calls)]
            meta = self._metadata(item)
            meta["invalid_tool_calls"] = item.parsed.invalid_tool_calls
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=calls,
                                                             usage_metadata=_usage(item), response_metadata=meta))

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict) -> ChatRequest:
        opts = {k: v for k, v in kwargs.items() if k in _REQUEST_KEYS and v is not None}
        tools = to_openai_tools(opts.pop("tools", None))
        return ChatRequest(
            messages=to_openai_messages(messages), tools=tools,
            max_tokens=opts.pop("max_tokens", self.max_tokens), temperature=opts.pop("temperature", self.temperature),
            top_p=opts.pop("top_p", self.top_p), top_k=opts.pop("top_k", self.top_k), seed=opts.pop("seed", self.seed),
            stop=list(stop or self.stop or []), constrain=self.constrain,
            reasoning=opts.pop("reasoning", self.reasoning),
            max_reasoning_tokens=opts.pop("max_reasoning_tokens", self.max_reasoning_tokens),
            spec=opts.pop("spec", self.spec), **opts)

    def _metadata(self, reply: ChatReply) -> dict:
        return {"finish_reason": reply.finish_reason, "model_name": self.model_name,
                "telemetry": reply.telemetry.as_dict()}


def _usage(reply: ChatReply) -> dict:
    return {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def _reasoning(text: str) -> dict:
    return {"reasoning_content": str(text)} if text else {}


def _json(args: dict) -> str:
    import json

    return json.dumps(args, ensure_ascii=False)
