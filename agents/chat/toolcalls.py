"""One parser for the tool-call formats models write, and the writer for the same formats.

Formats read (see docs/chat.md):
- Hermes/Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (one call per tag, several tags allowed);
- MiniCPM4-MCP: `<|tool_call_start|>```python\\nf(a=1)\\n```<|tool_call_end|>` (one call per line);
- a bare JSON object `{"name", "arguments"}` (or a list of them), possibly in a ```json fence;
- Python-call style `f(a=1)` or `[f(a=1), g(b=2)]` as the whole reply.

Reasoning (`<|thought_start|>...<|thought_end|>`, `<think>...</think>`) is split off first (agents.chat.reasoning)
and returned apart, so a call written inside reasoning is not a call and reasoning never reaches arguments.

`parse_tool_calls` never raises on model output: a malformed call becomes a langchain `InvalidToolCall` whose
`error` says what is wrong and how the call should look, so an agent can show it to the model.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from langchain_core.messages.tool import InvalidToolCall, ToolCall, invalid_tool_call, tool_call

from agents.chat.pycalls import PyCallError, parse_python_calls
from agents.chat.reasoning import split_reasoning

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MCP_OPEN, MCP_CLOSE = "<|tool_call_start|>", "<|tool_call_end|>"
CALL_MARKERS = (HERMES_OPEN, MCP_OPEN)
_FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```$", re.S)
_PY_HEAD = re.compile(r"^\[?\s*([A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*)\s*\(")
_RESPONSE_TAG = re.compile(r"</?tool_response>\n?")
_HOW = 'write a call as <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>'


@dataclass
class ParsedOutput:
    """A model reply split into its prose and its tool calls (valid and invalid)."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)
    reasoning: str = ""  # text of the reasoning blocks, kept out of content and calls


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_tool_calls(text: str, tool_names: list[str] | None = None) -> ParsedOutput:
    """Split `text` into prose and tool calls; `tool_names`, when given, are the only names accepted."""
    reasoning, text = split_reasoning(text or "")
    parsed = _parse_calls(text, tool_names)
    parsed.reasoning = reasoning
    # The prompt shows tool results as <tool_response> turns (agents.chat.prompting); a small model may copy
    # that wrapper into its answer. The tags are prompt format, never answer text: keep what they wrap.
    parsed.content = _RESPONSE_TAG.sub("", parsed.content).strip()
    return parsed


def distinct_calls(calls: list[ToolCall]) -> list[ToolCall]:
    """One of each identical call (same name and arguments): a small model allowed parallel calls repeats the
    same call (`cpm serve` returned 7 copies); running it twice in one turn never helps. The parser keeps
    what was written; EngineRunner applies this to every reply it builds."""
    seen, out = set(), []
    for call in calls:
        key = (call["name"], json.dumps(call["args"], sort_keys=True, default=str))
        if key not in seen:
            seen.add(key)
            out.append(call)
    return out


def _parse_calls(text: str, tool_names: list[str] | None) -> ParsedOutput:
    whole = _whole_bare_calls(text, tool_names)  # a bare call may itself hold "<tool_call>" inside a string
    if whole is not None:
        return whole
    out = ParsedOutput(content="")
    prose, pos, tagged = [], 0, False
    while True:
        start, marker = _next_marker(text, pos)
        if start < 0:
            prose.append(text[pos:])
            break
        tagged = True
        prose.append(text[pos:start])
        close = HERMES_CLOSE if marker == HERMES_OPEN else MCP_CLOSE
        body_start = start + len(marker)
        end = _find_close(text, body_start, close)
        # Cut off before the close tag (max_tokens): drop a partial close tag; a complete body still counts.
        body = _strip_partial(text[body_start:], close) if end < 0 else text[body_start:end]
        pos = len(text) if end < 0 else end + len(close)
        raw = text[start:pos]
        if end < 0 and not body.strip():
            _invalid(out, raw, None, f"the tool call was cut off before its body; {_HOW}")
            continue
        _parse_body(body, raw, marker, out)
    if not tagged:
        if not _parse_bare(text, out, tool_names):
            out.content = text.strip()
        return _check_names(out, tool_names)
    out.content = "".join(prose).strip()
    return _check_names(out, tool_names)


def render_tool_call(name: str, args: dict, style: str = "hermes") -> str:
    """Write one call in `style` ("hermes", "minicpm", "json" or "python"): the inverse of the parser."""
    if style == "hermes":
        return f"{HERMES_OPEN}\n{json.dumps({'name': name, 'arguments': args}, ensure_ascii=False)}\n{HERMES_CLOSE}"
    if style == "json":
        return json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    if style in ("python", "minicpm"):
        call = f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
        return call if style == "python" else f"{MCP_OPEN}\n```python\n{call}\n```\n{MCP_CLOSE}"
    raise ValueError(f"unknown tool-call style {style!r}: use hermes, minicpm, json or python")


def format_errors_for_model(invalid: list[InvalidToolCall]) -> str:
    """One message listing what was wrong with each invalid call, phrased for the model to fix it."""
    lines = [f"- {c.get('name') or 'unnamed call'}: {c.get('error')}" for c in invalid]
    return "Your tool call could not be used:\n" + "\n".join(lines)


def _next_marker(text: str, pos: int) -> tuple[int, str]:
    hits = [(i, m) for m in CALL_MARKERS if (i := text.find(m, pos)) >= 0]
    return min(hits) if hits else (-1, "")


def _parse_body(body: str, raw: str, marker: str, out: ParsedOutput) -> None:
    body = _unfence(body.strip())
    if body.startswith(("{", "[")):
        _parse_json_calls(body, raw, out)
        return
    try:
        for name, args in parse_python_calls(body):
            out.tool_calls.append(tool_call(name=name, args=args, id=new_call_id()))
    except PyCallError as exc:
        _invalid(out, raw, _PY_HEAD.match(body) and _PY_HEAD.match(body).group(1), f"{exc}; {_HOW}")


def _parse_bare(text: str, out: ParsedOutput, tool_names: list[str] | None) -> bool:
    """A whole reply that is a JSON call or a Python-style call; False when it is plain prose."""
    body = _unfence(text.strip())
    if body.startswith(("{", "[")) and '"name"' in body:
        try:
            value = json.loads(body, strict=False)
        except json.JSONDecodeError as exc:
            if _looks_like_call_json(body):
                _invalid(out, text, _guess_name(body), f"not valid JSON ({_json_where(exc)}); {_HOW}")
                return True
            return False
        except RecursionError:
            return False
        if not _is_call_shape(value):
            return False
        _add_json_calls(value, text, out)
        return True
    head = _PY_HEAD.match(body)
    if head and body.rstrip().endswith((")", ")]")):
        if tool_names is not None and head.group(1) not in tool_names:
            return False
        try:
            calls = parse_python_calls(body)
        except PyCallError as exc:
            _invalid(out, text, head.group(1), str(exc))
            return True
        for name, args in calls:
            out.tool_calls.append(tool_call(name=name, args=args, id=new_call_id()))
        return True
    return False


def _parse_json_calls(body: str, raw: str, out: ParsedOutput) -> None:
    try:
        value = json.loads(body, strict=False)
    except json.JSONDecodeError as exc:
        _invalid(out, raw, _guess_name(body), f"not valid JSON ({_json_where(exc)}); {_HOW}")
        return
    except RecursionError:
        _invalid(out, raw, None, f"JSON nested too deeply; {_HOW}")
        return
    _add_json_calls(value, raw, out)


def _add_json_calls(value, raw: str, out: ParsedOutput) -> None:
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and isinstance(item.get("function"), dict):
            item = item["function"]  # OpenAI's {"type": "function", "function": {...}} shape
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            _invalid(out, raw, None, f'a call needs a "name" string; {_HOW}')
            continue
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):  # OpenAI wire style: arguments as a JSON string
            try:
                args = json.loads(args, strict=False) if args.strip() else {}
            except json.JSONDecodeError as exc:
                _invalid(out, raw, item["name"], f'"arguments" is not valid JSON ({_json_where(exc)}); {_HOW}')
                continue
        if args is None:
            args = {}
        if not isinstance(args, dict):
            _invalid(out, raw, item["name"], f'"arguments" must be a JSON object, got {type(args).__name__}; {_HOW}')
            continue
        out.tool_calls.append(tool_call(name=item["name"], args=args, id=new_call_id()))


def _check_names(out: ParsedOutput, tool_names: list[str] | None) -> ParsedOutput:
    """Move calls to tools that do not exist into the invalid list, naming the tools that do."""
    if tool_names is None:
        return out
    good = []
    for call in out.tool_calls:
        if call["name"] in tool_names:
            good.append(call)
        else:
            known = ", ".join(tool_names) or "none"
            _invalid(out, json.dumps({"name": call["name"], "arguments": call["args"]}, default=str),
                     call["name"], f"no tool named {call['name']!r}; available tools: {known}")
    out.tool_calls = good
    return out


def _invalid(out: ParsedOutput, raw: str, name: str | None, error: str) -> None:
    out.invalid_tool_calls.append(invalid_tool_call(name=name, args=raw, id=new_call_id(), error=error))


def _whole_bare_calls(text: str, tool_names: list[str] | None) -> ParsedOutput | None:
    if text.lstrip().startswith(CALL_MARKERS):
        return None
    out = ParsedOutput(content="")
    if _parse_bare(text, out, tool_names) and out.tool_calls and not out.invalid_tool_calls:
        return _check_names(out, tool_names)
    return None


def _find_close(text: str, start: int, close: str) -> int:
    """The close tag ending a call body; skips close tags that sit inside the body's strings."""
    end = text.find(close, start)
    first = end
    while end >= 0:
        body = _unfence(text[start:end].strip())
        try:
            if body.startswith(("{", "[")):
                json.loads(body, strict=False)
            else:
                parse_python_calls(body)
            return end
        except (json.JSONDecodeError, RecursionError, PyCallError):
            end = text.find(close, end + len(close))
    return first


def _strip_partial(body: str, close: str) -> str:
    stripped = body.rstrip()
    for k in range(len(close) - 1, 0, -1):
        if stripped.endswith(close[:k]):
            return stripped[:-k]
    return body


def _unfence(body: str) -> str:
    m = _FENCE.match(body)
    return m.group(1).strip() if m else body


def _is_call_shape(value) -> bool:
    items = value if isinstance(value, list) else [value]
    if not items:
        return False
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("function"), dict):
            item = item["function"]
        if not (isinstance(item, dict) and "name" in item and ("arguments" in item or "parameters" in item)):
            return False
    return True


def _looks_like_call_json(body: str) -> bool:
    return '"arguments"' in body or '"parameters"' in body


def _guess_name(body: str) -> str | None:
    m = re.search(r'"name"\s*:\s*"([^"]{1,200})"', body)
    return m.group(1) if m else None


def _json_where(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg}: line {exc.lineno}, column {exc.colno}"
