"""Grammar-constrained decoding with xgrammar, plugged into the engine as a `LogitsProcessor`.

Tool calls are constrained in the Hermes format the prompt asks for (docs/chat.md):
`<tool_call>\\n{"name": "<tool>", "arguments": <JSON matching the tool's schema>}\\n</tool_call>`.
With tool_choice "auto" the first token decides between an answer and a call (agents.chat.decision); a call,
once started, must match a bound tool's schema, and an answer that opens `<tool_call>` later is held to the
same schemas (xgrammar's triggered tags). With "required" or a forced tool the call is forced from the first
token. Tool schemas get bounds first (agents.chat.schema_bounds), so every call closes. `response_format` json_schema / json_object constrains the whole reply.
"""
from __future__ import annotations

import json
import re
import threading
from functools import lru_cache

from agents.chat.schema_bounds import bounded_schema
from agents.chat.toolcalls import HERMES_CLOSE, HERMES_OPEN
from agents.chat.tooling import ToolChoice
from agents.errors import AgentError

# Bounds runs of whitespace inside JSON so a small model cannot spin on spaces and newlines until max_tokens.
MAX_JSON_WHITESPACE = 2
# After a complete call, when parallel calls are allowed, the grammar lets the model end or open another
# call. SmolLM2-135M's next token after `</tool_call>` is nearly always "\n", which under the grammar can only
# start another call: `cpm serve` returned 7 identical calls cut off by max_tokens. Ending gets this much
# extra logit there, so a second call is opened only when the model clearly prefers it (~e^5 = 150x odds;
# 3 still let it open a second, identical call on BFCL multiple: docs/benchmarks.md).
EXTRA_CALL_END_BIAS = 5.0
# A call must close inside max_tokens: in its last CLOSE_RESERVE tokens (at most half of the budget) the
# tokens that close what is open get CLOSE_BIAS: inside a string a token holding its closing quote, outside one
# a token holding `}` or `]` (or, where the object still lacks a required key, `"` to start it). Bounds alone
# did not do it: three 128-character strings ran past BFCL's 96-token budget (multiple_10, docs/benchmarks.md).
CLOSE_RESERVE = 24
CLOSE_BIAS = 30.0


def _prefer_end(row, stop_ids: list[int], bias: float, repeated) -> None:
    """Where the stop tokens are allowed together with something else (a call just closed, another may follow):
    only the stop tokens if `repeated()` says the call just closed repeats an earlier one, else `bias` added to
    them (in place)."""
    import torch

    ids = torch.tensor([i for i in stop_ids if i < row.numel()], dtype=torch.long, device=row.device)
    if not len(ids):
        return
    allowed = torch.isfinite(row)
    if not (bool(allowed[ids].any()) and int(allowed.sum()) > int(allowed[ids].sum())):
        return
    if repeated():
        keep = row[ids].clone()
        row.fill_(float("-inf"))
        row[ids] = keep
    else:
        row[ids] += bias


def repeats_a_call(text: str) -> bool:
    """Whether the last closed call in `text` (the reply's calls) has the same name and arguments as an earlier
    one. Calls are compared from `{"name": "` on; the first call's head may sit in the prompt (jump-forward:
    `<tool_call>\n{"name": "f", "arguments": {`), so the last call may end with the first's text instead."""
    bodies = [part.split('{"name": "')[-1].strip() for part in text.split(HERMES_CLOSE)[:-1]]
    if len(bodies) < 2:
        return False
    last = bodies[-1]
    return last in bodies[1:-1] or (bool(bodies[0]) and last.endswith(bodies[0]))


# How every call starts (tool_call_structural_tag's `begin` up to the name).
CALL_HEAD = f'{HERMES_OPEN}\n{{"name": "'

_NATIVE_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


class GrammarError(AgentError):
    """A tool schema or response_format that xgrammar cannot compile."""


def _in_string(text: str) -> bool:
    """Whether `text` (a call so far) ends inside a JSON string: an odd number of unescaped quotes after the
    call's `"arguments": `."""
    tail = text.rsplit('"arguments": ', 1)[-1] if '"arguments": ' in text else ""
    quotes, escaped = 0, False
    for ch in tail:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quotes += 1
    return quotes % 2 == 1


class ClosingPressure:
    """Closes a call that would otherwise run past its token budget (see CLOSE_RESERVE): which tokens close
    what, read once from the vocabulary."""

    def __init__(self, token_texts: list[str], stop_ids: list[int]):
        import torch

        self.quote = torch.tensor(['"' in t and "\\" not in t for t in token_texts])
        # outside a string: close a container, or end the reply once the call is closed
        self.bracket = torch.tensor([("}" in t or "]" in t) and '"' not in t for t in token_texts])
        self.bracket[[i for i in stop_ids if i < len(token_texts)]] = True
        # whitespace is never needed between JSON tokens: in the reserve, tokens with whitespace at either end
        # (" :", "\n", " false") are not written where a token without is allowed
        self.space = torch.tensor([bool(t) and t != t.strip() for t in token_texts])

    def apply(self, row, text: str) -> None:
        """Add CLOSE_BIAS (in place) to the allowed tokens that close the innermost open thing in `text`."""
        import torch

        allowed = torch.isfinite(row)
        n = min(row.numel(), self.quote.numel())
        space = allowed[:n] & self.space[:n].to(row.device)
        if bool(space.any()) and int(allowed[:n].sum()) > int(space.sum()):
            row[:n] = row[:n].masked_fill(space, float("-inf"))
            allowed = torch.isfinite(row)
        for mask in ((self.quote,) if _in_string(text) else (self.bracket, self.quote)):
            pick = allowed[:n] & mask[:n].to(row.device)
            if bool(pick.any()):
                row[:n] = row[:n] + pick.to(row.dtype) * CLOSE_BIAS
                return


def _steer(row, text: str, target: str, piece) -> None:
    """While `text` is a proper prefix of `target`, keep (in place) only the allowed tokens that go on along it
    (or finish it and go past); nothing changes when no allowed token does (then the grammar decides)."""
    import torch

    if len(text) >= len(target) or not target.startswith(text):
        return
    allowed = torch.nonzero(torch.isfinite(row)).view(-1).tolist()
    keep = [i for i in allowed if (target.startswith(text + piece(i)) or (text + piece(i)).startswith(target))
            and piece(i)]
    if keep:
        saved = row[keep].clone()
        row.fill_(float("-inf"))
        row[keep] = saved


class GrammarLogitsProcessor:
    """Masks logits to the tokens the grammar allows next; one instance per generation (it holds a matcher).

    Implements the engine's `LogitsProcessor` protocol: `__call__(generated, logits)`, where `generated` holds
    the ids sampled so far; tokens not yet seen are fed to the matcher first.
    """

    def __init__(self, compiled, vocab_size: int, stop_ids: list[int] | None = None, end_bias: float = 0.0,
                 decode=None, closing: ClosingPressure | None = None):
        import xgrammar as xgr

        self._xgr = xgr
        # end_bias > 0: where the grammar allows both ending and going on (after a tool call, another call),
        # ending is preferred by this much (logits). See `EXTRA_CALL_END_BIAS`.
        # SmolLM2 repeated the same call 3-7 times even so: a call that repeats an earlier one ends the reply
        # (`decode(ids) -> text` reads the calls; without it only the bias applies).
        self.stop_ids = list(stop_ids or [])
        self.end_bias = end_bias
        self.decode = decode
        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size
        self.seen = 0
        self.rejected_token: int | None = None  # set if the sampler produced a token the grammar refused
        # Calls only: `closing` and a `budget` (max_tokens, set by the runner) close a call before the budget
        # ends; `head` is the call text put in the prompt (jump-forward), which the decoded tokens continue.
        self.closing = closing
        self.budget: int | None = None
        self.head = ""
        # Calls only: the text the first call must begin with (`<tool_call>\n{"name": "<chosen>"`, the tool chosen
        # by agents.chat.choose); `piece(id) -> text` reads a token. Later calls are free among the bound tools.
        self.steer: str | None = None
        self.piece = None

    def _sync(self, generated: list[int]) -> None:
        """Feed the matcher the tokens generated since the last call (the engine passes all of them)."""
        for token in generated[self.seen:]:
            self.seen += 1
            if self.rejected_token is None and not self.matcher.is_terminated():
                if not self.matcher.accept_token(int(token)):
                    self.rejected_token = int(token)

    def draft_prefix_ok(self, generated: list[int], tokens: list[int]) -> int:
        """How many leading drafted tokens the grammar accepts (engine.speculative.constrain.DraftChecker), so
        speculation cuts a draft where it leaves the grammar; the matcher is rolled back, its state unchanged."""
        self._sync(generated)
        if self.rejected_token is not None:
            return len(tokens)
        n = 0
        for t in tokens:
            if self.matcher.is_terminated() or not self.matcher.accept_token(int(t)):
                break
            n += 1
        if n:
            self.matcher.rollback(n)
        return n

    def __call__(self, generated: list[int], logits):
        self._sync(generated)
        if self.rejected_token is not None or self.matcher.is_terminated():
            return logits  # nothing left to constrain; the engine stops on EOS
        self.matcher.fill_next_token_bitmask(self.bitmask)
        view = logits.view(1, -1) if logits.dim() == 1 else logits
        self._xgr.apply_token_bitmask_inplace(view, self.bitmask.to(logits.device), vocab_size=self.vocab_size)
        if self.end_bias and self.stop_ids:
            _prefer_end(view[0], self.stop_ids, self.end_bias,
                        lambda: self.decode is not None and repeats_a_call(self.decode(generated)))
        if self.steer and self.decode is not None and self.piece is not None:
            _steer(view[0], self.head + self.decode(generated), self.steer, self.piece)
        if self.closing is not None and self.budget and self.decode is not None and \
                self.budget - len(generated) <= min(CLOSE_RESERVE, self.budget // 2):
            self.closing.apply(view[0], self.head + self.decode(generated))
        return logits

    @property
    def finished(self) -> bool:
        return self.matcher.is_terminated()


class GrammarFactory:
    """Compiles grammars for one tokenizer (compilation is cached by xgrammar and by the JSON of the request)."""

    def __init__(self, tokenizer, vocab_size: int | None = None, stop_token_ids: list[int] | None = None):
        import xgrammar as xgr

        self.vocab_size = vocab_size or len(tokenizer)
        self.stop_ids = list(stop_token_ids or [tokenizer.eos_token_id])
        self._decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)
        self._tokenizer = tokenizer
        self._closing: ClosingPressure | None = None
        self._pieces: dict[int, str] = {}
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=self.vocab_size,
                                                  stop_token_ids=stop_token_ids)
        # Two threads at most: the machine is shared and schemas are small.
        self.compiler = xgr.GrammarCompiler(info, max_threads=2)
        self._lock = threading.Lock()  # GrammarCompiler is shared by the server's request threads
        self._compile = lru_cache(maxsize=64)(self._compile_uncached)

    def for_tools(self, tools: list[dict], choice: ToolChoice, parallel: bool = True):
        """A processor constraining tool calls, or None when tool_choice is "none" or no tools are bound.

        "required"/a named tool: a `GrammarLogitsProcessor` forcing one call (more only with `parallel`).
        "auto": a `ToolDecision` (agents.chat.decision): the first token decides between an answer and a call.
        """
        if choice.mode == "none" or not tools:
            return None
        calls = self.calls_processor(tools, choice, parallel)
        if choice.mode != "auto":
            return calls
        from agents.chat.decision import ToolDecision

        tag = tool_call_structural_tag(tools, choice, parallel)
        answer = GrammarLogitsProcessor(self._compiled("tag", json.dumps(tag)), self.vocab_size)
        return ToolDecision(answer, calls)

    def calls_processor(self, tools: list[dict], choice: ToolChoice, parallel: bool) -> GrammarLogitsProcessor:
        """One call forced from the first token (several with `parallel`, each after the first disfavoured by
        EXTRA_CALL_END_BIAS), to the tools `choice` names."""
        forced = ToolChoice("required", choice.names or tuple(t["function"]["name"] for t in tools))
        tag = tool_call_structural_tag(tools, forced, parallel)
        return GrammarLogitsProcessor(self._compiled("tag", json.dumps(tag)), self.vocab_size, self.stop_ids,
                                      EXTRA_CALL_END_BIAS if parallel else 0.0, self._decode, self.closing())

    def piece(self, token_id: int) -> str:
        """One token's text (cached; the name steering reads the few tokens a call's name allows)."""
        text = self._pieces.get(token_id)
        if text is None:
            text = self._pieces[token_id] = self._decode([token_id])
        return text

    def closing(self) -> "ClosingPressure":
        """The vocabulary's closing and whitespace tokens, read once."""
        with self._lock:
            if self._closing is None:
                texts = self._tokenizer.batch_decode([[i] for i in range(len(self._tokenizer))])
                texts += [""] * (self.vocab_size - len(texts))
                self._closing = ClosingPressure([t or "" for t in texts[:self.vocab_size]], self.stop_ids)
            return self._closing

    def for_response_format(self, response_format: dict | None) -> GrammarLogitsProcessor | None:
        """A processor for OpenAI's `response_format` ({"type": "json_schema"|"json_object"|"text"})."""
        kind, key = response_format_key(response_format)
        if kind is None:
            return None
        return GrammarLogitsProcessor(self._compiled(kind, key), self.vocab_size)

    def _compiled(self, kind: str, key: str):
        with self._lock:
            return self._compile(kind, key)

    def _compile_uncached(self, kind: str, key: str):
        import xgrammar as xgr

        try:
            if kind == "tag":
                return self.compiler.compile_structural_tag(key)
            if kind == "json_object":  # OpenAI's json_object means an object, not any JSON value
                return self.compiler.compile_json_schema({"type": "object"}, any_whitespace=False)
            return self.compiler.compile_json_schema(key, any_whitespace=False)
        except (xgr.InvalidJSONError, xgr.InvalidStructuralTagError, RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            first = _NATIVE_PREFIX.sub("", first)  # "[11:10:15] /project/cpp/x.cc:4944: " says nothing to a user
            raise GrammarError(f"cannot build a grammar for this {'tool schema' if kind == 'tag' else 'schema'}: "
                               f"{first}") from exc


def tool_call_structural_tag(tools: list[dict], choice: ToolChoice, parallel: bool = True) -> dict:
    """The xgrammar structural tag for Hermes-format calls to `tools` under `choice`."""
    allowed = [t["function"] for t in tools if not choice.names or t["function"]["name"] in choice.names]
    tags = [{
        "type": "tag",
        # json.dumps(name)[1:-1]: the name as it appears inside a JSON string
        "begin": f'{CALL_HEAD}{json.dumps(fn["name"])[1:-1]}", "arguments": ',
        "content": {"type": "json_schema", "json_schema": bounded_schema(fn.get("parameters")),
                    "max_whitespace_cnt": MAX_JSON_WHITESPACE},
        "end": f"}}\n{HERMES_CLOSE}",
    } for fn in allowed]
    if choice.mode == "auto":
        fmt = {"type": "triggered_tags", "triggers": [HERMES_OPEN], "tags": tags, "stop_after_first": not parallel}
    else:
        fmt = {"type": "tags_with_separator", "tags": tags, "separator": "\n", "at_least_one": True,
               "stop_after_first": not parallel}
    return {"type": "structural_tag", "format": fmt}


def response_format_key(response_format: dict | None) -> tuple[str | None, str]:
    """("json_schema", schema JSON) | ("json_object", "") | (None, "") for text; AgentError when malformed."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None, ""
    kind = response_format.get("type")
    if kind == "json_object":
        return "json_object", ""
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise AgentError('response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}')
        return "json_schema", json.dumps(schema)  # key order matters: the grammar keeps it
    raise AgentError(f"response_format type {kind!r} is not supported: use text, json_object or json_schema")

