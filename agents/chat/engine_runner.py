"""One chat turn on the in-process Engine: prompt, grammar, generation, tool-call parsing.

Shared by `ChatEngine` (langchain) and `cpm serve` (HTTP), so both render, constrain and parse identically.
The Engine is thread-safe (its scheduler batches concurrent requests), so turns from many threads run at once;
closing a stream early cancels its generation and frees its KV blocks.

Think, then call (`ChatRequest.reasoning`): the reply is opened with the style's reasoning marker, the
reasoning is decoded free (bounded by `max_reasoning_tokens`, ended by the close marker or a `<tool_call>`),
then the block is closed and the answer or call is decoded under the grammar, so the grammar applies from the
call marker on and reasoning can never reach the arguments.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterator

from agents.chat.choose import NULL_QUESTION, choose_tool, name_pmi, name_scores
from agents.chat.grammar import CALL_HEAD, GrammarFactory, response_format_key
from agents.chat.prompting import render_prompt
from agents.chat.reasoning import ReasoningStreamSplitter, markers, split_reasoning
from agents.chat.streamsplit import ResponseTagDropper, ToolCallStreamSplitter, drop_response_tags
from agents.chat.telemetry import StepTelemetry, total
from agents.chat.toolcalls import HERMES_OPEN, ParsedOutput, distinct_calls, parse_tool_calls
from agents.chat.tooling import ToolChoice, normalize_tool_choice, tool_names
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
    repetition_penalty: float = 1.0  # > 1: ids already in the prompt or the reply become less likely
    no_repeat_ngram_size: int = 0  # n > 0: no n-gram of the reply repeats (loop-free long-form writing)
    constrain: bool = True  # False: no grammar (to measure what the model writes unaided)
    reasoning: str | None = None  # "think" | "thought": open the reply with reasoning, then answer or call
    max_reasoning_tokens: int = 256  # bound on the reasoning; max_tokens bounds the answer or call after it
    spec: str = "none"  # speculative drafter (engine SamplingParams.spec): none | prompt-lookup | eagle:DIR


class Reasoning(str):
    """A streamed piece of reasoning (a plain `str` piece is answer text)."""


@dataclass
class ChatReply:
    """The parsed outcome of one turn; `finish_reason` is "stop", "length" or "tool_calls"."""

    parsed: ParsedOutput
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    telemetry: StepTelemetry = field(default_factory=StepTelemetry)


@dataclass
class Prepared:
    """A checked request: prompt ids, sampling parameters (grammar included) and how to parse the reply."""

    prompt_ids: list[int]
    params: Any
    names: list[str] | None  # tool names when the reply is parsed for calls, else None
    prefix: str = ""  # text the grammar forces at the start, placed in the prompt instead of decoded
    prompt: str = ""  # the prompt text (think-then-call re-encodes it with the reasoning appended)
    reasoning: tuple[str, str] | None = None  # (open, close) markers when the reply starts with reasoning
    max_reasoning_tokens: int = 0


class EngineRunner:
    """Runs chat requests on one Engine, concurrently from any number of threads."""

    def __init__(self, engine):
        self.engine = engine
        self._grammars_lock = threading.Lock()  # guards only the factory's one-time construction
        self._grammars: GrammarFactory | None = None

    @property
    def grammars(self) -> GrammarFactory:
        with self._grammars_lock:
            return self._grammar_factory()

    def _grammar_factory(self) -> GrammarFactory:
        if self._grammars is None:  # built on first constrained request: it walks the whole vocabulary
            tok = self.engine.tokenizer
            vocab = getattr(getattr(self.engine, "config", None), "vocab_size", None)
            stops = sorted(getattr(self.engine, "eos_ids", None) or [tok.eos_token_id])
            self._grammars = GrammarFactory(tok, vocab_size=vocab, stop_token_ids=list(stops))
        return self._grammars

    def complete(self, req: ChatRequest | Prepared) -> ChatReply:
        prep = req if isinstance(req, Prepared) else self.prepare(req)
        pieces = list(self._generations(prep, stream=False))
        return self._reply("".join(p.text for p in pieces), prep, [p.result for p in pieces if p.result is not None])

    def stream(self, req: ChatRequest) -> Iterator[str | ChatReply]:
        """Yields answer pieces (`str`) and reasoning pieces (`Reasoning`) as they are decoded, then one ChatReply
        (tool calls parsed from the full text).

        The request is checked (and its grammar compiled) here, before the first item, so a bad request fails
        at the call rather than mid-stream.
        """
        return self.stream_prepared(self.prepare(req))

    def stream_prepared(self, prep: Prepared) -> Iterator[str | ChatReply]:
        """`stream` for a request already checked by `prepare`; closing it early cancels the generation."""
        thoughts = ReasoningStreamSplitter()
        calls = ToolCallStreamSplitter() if prep.names is not None else None
        tags = ResponseTagDropper()  # the answer text never carries the prompt's <tool_response> wrapper
        results, text = [], []
        for chunk in self._generations(prep, stream=True):
            text.append(chunk.text)
            if chunk.result is not None:
                results.append(chunk.result)
            yield from _answer_pieces(_pieces(thoughts.feed(chunk.text), calls), tags)
        yield from _answer_pieces(_pieces(thoughts.flush(), calls), tags)
        if calls and (tail := calls.flush()):
            yield from _answer_pieces([tail], tags)
        if held := tags.flush():
            yield held
        if not results:
            raise AgentError("the engine's stream ended without a final result")
        yield self._reply("".join(text), prep, results)

    def _generations(self, prep: Prepared, stream: bool) -> Iterator[Any]:
        """The reply's text as chunks (`.text`, `.result` on each generation's last): forced prefixes included,
        so their concatenation is the whole reply."""
        run = self.engine.stream if stream else _generate_as_chunk(self.engine)
        if prep.reasoning is None:
            yield _text_chunk(prep.prefix)
            yield from run(prep.prompt_ids, prep.params)
            return
        from engine import SamplingParams

        open_, close = prep.reasoning
        yield _text_chunk(open_ + "\n")
        # Phase 1: free reasoning; the close marker or the start of a call ends it.
        think = SamplingParams(max_tokens=prep.max_reasoning_tokens, temperature=prep.params.temperature,
                               top_p=prep.params.top_p, top_k=prep.params.top_k, seed=prep.params.seed,
                               stop=[close, HERMES_OPEN], spec=prep.params.spec,
                               repetition_penalty=prep.params.repetition_penalty,
                               no_repeat_ngram_size=prep.params.no_repeat_ngram_size)
        reasoning, result = [], None
        for chunk in run(prep.prompt_ids, think):
            reasoning.append(chunk.text)
            result = chunk.result or result
            yield chunk
        # Phase 2: the block closed, the answer or call under the grammar (started for the model when it had
        # begun a call in its reasoning and the grammar allows one here).
        prefix = prep.prefix
        if not prefix and result is not None and self._stopped_at_call(result) and prep.params.logits_processors:
            matcher = prep.params.logits_processors[0].matcher
            if matcher.accept_string(HERMES_OPEN):
                prefix = HERMES_OPEN + matcher.find_jump_forward_string()
                matcher.accept_string(prefix[len(HERMES_OPEN):])
                _arm_budget(prep.params.logits_processors[0], prep.params.max_tokens, prefix)
        close_block = f"\n{close}\n"
        yield _text_chunk(close_block + prefix)
        thought = "".join(reasoning)
        ids = self.engine.tokenizer.encode(prep.prompt + open_ + "\n" + thought + close_block + prefix,
                                           add_special_tokens=False)
        yield from run(ids, prep.params)

    def _stopped_at_call(self, result) -> bool:
        # The stop string is cut from `text` but its tokens are in `token_ids`.
        return HERMES_OPEN in self.engine.tokenizer.decode(result.token_ids, skip_special_tokens=False)

    def prepare(self, req: ChatRequest) -> Prepared:
        """Check the request, render its prompt and build its grammar."""
        from engine import SamplingParams

        if not req.messages:
            raise AgentError("a chat request needs at least one message")
        choice = normalize_tool_choice(req.tool_choice, req.tools)
        prompt = render_prompt(self._apply_template, self.engine.tokenizer.chat_template, req.messages,
                               req.tools, choice)
        processors = []
        thinking = markers(req.reasoning) if req.reasoning else None
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
            _arm_budget(proc, req.max_tokens, prefix)
            if not thinking:  # with reasoning the tool is chosen after it, by the grammar alone
                self._steer_first_call(proc, prompt, req, choice)
        params = SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                top_k=req.top_k, seed=req.seed, stop=list(req.stop or []),
                                repetition_penalty=req.repetition_penalty,
                                no_repeat_ngram_size=req.no_repeat_ngram_size,
                                logits_processors=processors, spec=req.spec)
        params.validate()  # a bad spec fails here, before anything is queued
        # The template wrote any BOS. With reasoning, the reply opens with the reasoning marker; the forced call
        # prefix comes after the reasoning.
        head = thinking[0] + "\n" if thinking else prefix
        ids = self.engine.tokenizer.encode(prompt + head, add_special_tokens=False)
        names = tool_names(req.tools) if choice.mode != "none" and req.tools else None
        return Prepared(ids, params, names, prefix, prompt, thinking, req.max_reasoning_tokens)

    def _steer_first_call(self, proc, prompt: str, req: ChatRequest, choice) -> None:
        """Choose the first call's tool by the model's own scores and steer the call grammar to it; under
        tool_choice auto, also weigh the question's pull toward a call into the decision (agents.chat.choose)."""
        calls = getattr(proc, "call", proc)
        if not hasattr(calls, "steer"):
            return
        names = list(choice.names) if choice.names else tool_names(req.tools)
        auto = hasattr(proc, "inform")
        if len(names) < 2 and not auto:
            return
        scores = name_scores(self.engine, prompt + CALL_HEAD, names)
        if len(names) > 1:
            by_name = {t["function"]["name"]: t for t in req.tools}
            prompts = {n: render_prompt(self._apply_template, self.engine.tokenizer.chat_template, req.messages,
                                        [by_name[n]], ToolChoice("auto")) for n in names}
            chosen, _ = choose_tool(self.engine, scores, prompts, _last_user_text(req.messages))
            calls.steer = f'{CALL_HEAD}{json.dumps(chosen)[1:-1]}"'
            calls.piece = self.grammars.piece
        if auto:
            system = [m for m in req.messages if m["role"] == "system"]
            null = render_prompt(self._apply_template, self.engine.tokenizer.chat_template,
                                 system + [{"role": "user", "content": NULL_QUESTION}], req.tools, choice)
            proc.inform(name_pmi(self.engine, scores, null + CALL_HEAD, names))

    def _apply_template(self, messages: list[dict], tools=None, add_generation_prompt: bool = True) -> str:
        apply = getattr(self.engine, "apply_chat_template", None)
        if apply is not None:
            return apply(messages, tools=tools, add_generation_prompt=add_generation_prompt)
        return self.engine.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                         add_generation_prompt=add_generation_prompt)

    def _reply(self, text: str, prep: Prepared, results) -> ChatReply:
        """The reply to `text`, the whole reply; `results` are its engine generations (one result or a list)."""
        results = results if isinstance(results, list) else [results]
        if prep.names is not None:
            parsed = parse_tool_calls(text, prep.names)
        else:
            reasoning, content = split_reasoning(text)
            parsed = ParsedOutput(content=content.strip() if reasoning else content, reasoning=reasoning)
        # Every caller (ChatEngine, cpm serve) gets the answer without a copied <tool_response> wrapper and each
        # identical call once: a small model allowed parallel calls repeats the same one.
        parsed.content = drop_response_tags(parsed.content)
        parsed.tool_calls = distinct_calls(parsed.tool_calls)
        last = results[-1]
        # A closed call is a finished reply even when its last token was the budget's last (grammar.CLOSE_RESERVE).
        closed = parsed.tool_calls and not parsed.invalid_tool_calls
        finish = "tool_calls" if closed or (parsed.tool_calls and last.finish_reason == "stop") else last.finish_reason
        capacity = int(getattr(self.engine, "max_seq_len", 0) or 0)
        telemetry = total(StepTelemetry.from_result(r, capacity, self._attention_mode(r)) for r in results)
        return ChatReply(parsed, finish, results[0].prompt_tokens, telemetry.generated_tokens, telemetry)


    def _attention_mode(self, result) -> str | None:
        """dense / sparse / dense+sparse from the engine's sparse backend (InfLLM v2), None without one."""
        sparse_at = getattr(getattr(getattr(self.engine, "runner", None), "attn", None), "sparse_at", None)
        if sparse_at is None:
            return None
        # The prefill attends prompt_tokens keys; the last decode step prompt + generated.
        first, last = sparse_at(result.prompt_tokens), sparse_at(result.prompt_tokens + result.decode_tokens)
        return "sparse" if first else "dense+sparse" if last else "dense"


def _last_user_text(messages: list[dict]) -> str:
    text = next((m.get("content") for m in reversed(messages) if m["role"] == "user"), "")
    return text if isinstance(text, str) else ""


def _arm_budget(proc, max_tokens: int, head: str) -> None:
    """Tell the call grammar its token budget and the call text already in the prompt (grammar.CLOSE_RESERVE)."""
    calls = getattr(proc, "call", proc)  # a ToolDecision's call grammar, or the forced-call grammar itself
    if getattr(calls, "closing", None) is not None:
        calls.budget, calls.head = max_tokens, head


def _pieces(split: tuple[str, str], calls: ToolCallStreamSplitter | None) -> Iterator[str]:
    """Reasoning as `Reasoning` pieces; answer text through the tool-call splitter (which holds back calls)."""
    reasoning, content = split
    if reasoning:
        yield Reasoning(reasoning)
    if content and (piece := calls.feed(content) if calls else content):
        yield piece


def _answer_pieces(pieces, tags: ResponseTagDropper) -> Iterator[str]:
    """Answer pieces through the tag dropper (which may hold a piece back); reasoning passes unchanged."""
    for piece in pieces:
        if isinstance(piece, Reasoning):
            yield piece
        elif text := tags.feed(piece):
            yield text


def _text_chunk(text: str) -> SimpleNamespace:
    return SimpleNamespace(text=text, result=None)


def _generate_as_chunk(engine):
    """`engine.generate` shaped like `engine.stream`: one chunk holding the whole text and the result."""
    def run(ids, params):
        result = engine.generate(ids, params)
        return [SimpleNamespace(text=result.text, result=result)]
    return run
