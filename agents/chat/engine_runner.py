"""One chat turn on the in-process Engine: prompt, grammar, generation, tool-call parsing.

Shared by `ChatEngine` (langchain) and `cpm serve` (HTTP), so both render, constrain and parse identically.
The Engine is not thread-safe: every generation holds this runner's lock for its whole length.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterator

from agents.chat.grammar import GrammarFactory, response_format_key
from agents.chat.prompting import render_prompt
from agents.chat.streamsplit import ToolCallStreamSplitter
from agents.chat.toolcalls import ParsedOutput, parse_tool_calls
from agents.chat.tooling import normalize_tool_choice, tool_names
from agents.errors import AgentError


@dataclass
class ChatRequest:
    """An OpenAI-style chat request: messages and tools are OpenAI dicts."""

    messages: list[dict]
    tools: list[dict] = field(default_factory=list)
    tool_choice: Any = None
    response_format: dict | None = None
    parallel_tool_calls: bool = True
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    constrain: bool = True  # False: no grammar (to measure what the model writes unaided)


@dataclass
class ChatReply:
    """The parsed outcome of one turn; `finish_reason` is "stop", "length" or "tool_calls"."""

    parsed: ParsedOutput
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Prepared:
    """A checked request: prompt ids, sampling parameters (grammar included) and how to parse the reply."""

    prompt_ids: list[int]
    params: Any
    names: list[str] | None  # tool names when the reply is parsed for calls, else None
    prefix: str = ""  # text the grammar forces at the start, placed in the prompt instead of decoded


class EngineRunner:
    """Runs chat requests on one Engine, one at a time."""

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self._grammars: GrammarFactory | None = None

    @property
    def grammars(self) -> GrammarFactory:
        if self._grammars is None:  # built on first constrained request: it walks the whole vocabulary
            tok = self.engine.tokenizer
            vocab = getattr(getattr(self.engine, "config", None), "vocab_size", None)
            stops = sorted(getattr(self.engine, "eos_ids", None) or [tok.eos_token_id])
            self._grammars = GrammarFactory(tok, vocab_size=vocab, stop_token_ids=list(stops))
        return self._grammars

    def complete(self, req: ChatRequest | Prepared) -> ChatReply:
        prep = req if isinstance(req, Prepared) else self.prepare(req)
        with self.lock:
            result = self.engine.generate(prep.prompt_ids, prep.params)
        return self._reply(prep.prefix + result.text, prep, result)

    def stream(self, req: ChatRequest) -> Iterator[str | ChatReply]:
        """Yields prose pieces as they are decoded, then one ChatReply (tool calls parsed from the full text).

        The request is checked (and its grammar compiled) here, before the first item, so a bad request fails
        at the call rather than mid-stream.
        """
        return self.stream_prepared(self.prepare(req))

    def stream_prepared(self, prep: Prepared) -> Iterator[str | ChatReply]:
        """`stream` for a request already checked by `prepare`; the engine lock is held while it runs."""
        splitter = ToolCallStreamSplitter() if prep.names is not None else None
        result = None
        with self.lock:
            first = [SimpleNamespace(text=prep.prefix, result=None)] if prep.prefix else []
            for chunk in itertools.chain(first, self.engine.stream(prep.prompt_ids, prep.params)):
                if chunk.text:
                    piece = splitter.feed(chunk.text) if splitter else chunk.text
                    if piece:
                        yield piece
                if chunk.result is not None:
                    result = chunk.result
        if splitter and (tail := splitter.flush()):
            yield tail
        if result is None:
            raise AgentError("the engine's stream ended without a final result")
        yield self._reply(prep.prefix + result.text, prep, result)

    def prepare(self, req: ChatRequest) -> Prepared:
        """Check the request, render its prompt and build its grammar (no engine lock needed)."""
        from engine import SamplingParams

        if not req.messages:
            raise AgentError("a chat request needs at least one message")
        choice = normalize_tool_choice(req.tool_choice, req.tools)
        prompt = render_prompt(self._apply_template, self.engine.tokenizer.chat_template, req.messages,
                               req.tools, choice)
        processors = []
        # A required call wins over response_format; otherwise the JSON format constrains the whole reply.
        if choice.mode == "required" or (choice.mode == "auto" and response_format_key(req.response_format)[0] is None):
            proc = self.grammars.for_tools(req.tools, choice, req.parallel_tool_calls)
        else:
            proc = self.grammars.for_response_format(req.response_format)
        prefix = ""
        if proc is not None and req.constrain:
            processors.append(proc)
            # Jump-forward: text the grammar allows in exactly one way (a forced call's `<tool_call>\n{"name":
            # "f", "arguments": `) is put in the prompt, costing one prefill instead of a decode step per token.
            prefix = proc.matcher.find_jump_forward_string()
            if prefix and not proc.matcher.accept_string(prefix):
                raise AgentError(f"internal: the grammar refused its own forced prefix {prefix!r}")
            prompt += prefix
        params = SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                top_k=req.top_k, seed=req.seed, stop=list(req.stop or []),
                                logits_processors=processors)
        ids = self.engine.tokenizer.encode(prompt, add_special_tokens=False)  # the template wrote any BOS
        names = tool_names(req.tools) if choice.mode != "none" and req.tools else None
        return Prepared(ids, params, names, prefix)

    def _apply_template(self, messages: list[dict], tools=None, add_generation_prompt: bool = True) -> str:
        apply = getattr(self.engine, "apply_chat_template", None)
        if apply is not None:
            return apply(messages, tools=tools, add_generation_prompt=add_generation_prompt)
        return self.engine.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                         add_generation_prompt=add_generation_prompt)

    @staticmethod
    def _reply(text: str, prep: Prepared, result) -> ChatReply:
        parsed = parse_tool_calls(text, prep.names) if prep.names is not None else ParsedOutput(content=text)
        finish = "tool_calls" if parsed.tool_calls and result.finish_reason == "stop" else result.finish_reason
        return ChatReply(parsed, finish, result.prompt_tokens, result.decode_tokens)
