"""The OpenAI request bodies `cpm serve` accepts, as pydantic models, and how a body is read and checked.

Strict types (a string is not a number, `Infinity` / `NaN` are not numbers), OpenAI's ranges, a body size and a
nesting-depth bound; every refusal is a `RequestError` naming the field (`param`), which the server answers as
OpenAI does: status 400 with {"error": {"message", "type", "param", "code"}}. Unknown keys are ignored, as vLLM
does (OpenAI refuses them), so clients that send extra OpenAI options keep working.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_BODY_BYTES = 8 * 1024 * 1024  # a 1 MB prompt fits; a runaway upload does not
MAX_DEPTH = 64  # JSON nesting; real bodies (tool schemas included) stay far below it
MAX_STOP = 16  # OpenAI allows 4; langchain and vLLM clients send more
SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)  # what torch.Generator.manual_seed takes


class RequestError(Exception):
    """A request the server refuses; becomes an OpenAI-style error body with `status`."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore", populate_by_name=True)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def as_openai(self) -> dict:
        """The dict the chat runner renders: text content, `developer` read as `system`."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters or a response schema must be a valid JSON Schema: the grammar is built from it, and a
    malformed one (`"properties": []`) would otherwise fail deep inside the grammar builder as a 500."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValueError(f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"[:300]) from None
    return schema


JsonSchema = Annotated[dict[str, Any], AfterValidator(_json_schema)]


class FunctionDef(_Body):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: str | None = None
    parameters: JsonSchema | None = None
    strict: bool | None = None


class Tool(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(_Body):
    name: str = "response"
    schema_: JsonSchema = Field(default_factory=dict, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object")
        return self


class StreamOptions(_Body):
    include_usage: bool = False


Seed = Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])]
StopText = Annotated[str, Field(min_length=1)]


class _Sampling(_Body):
    """Fields chat and text completions share."""

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    seed: Seed | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP)] | None = None
    n: Literal[1] = 1  # one choice per request: the engine decodes one sequence per request
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def sampling(self) -> tuple[float, float]:
        """(temperature, top_p) for the engine. top_p 0 keeps only the most likely token, which is greedy
        decoding: it is honoured as temperature 0 (the engine's nucleus needs top_p > 0)."""
        temperature = 0.0 if self.temperature is None else self.temperature
        top_p = 1.0 if self.top_p is None else self.top_p
        return (0.0, 1.0) if top_p == 0 else (temperature, top_p)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionBody(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    parallel_tool_calls: bool = True

    def check_tool_choice(self) -> None:
        """A forced choice needs tools, and a named one a tool of that name (OpenAI refuses both, never ignores)."""
        names = [t.function.name for t in self.tools or []]
        forced = self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice)
        if forced and not names:
            raise RequestError("Invalid 'tool_choice': 'required' or a named function is only allowed when "
                               "'tools' are given", param="tool_choice", code="invalid_value")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise RequestError(f"Invalid 'tool_choice': it names {self.tool_choice.function.name!r}, which is not "
                               f"in 'tools' ({', '.join(names)})", param="tool_choice", code="invalid_value")

    def budget(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 512


class CompletionBody(_Sampling):
    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    echo: bool = False
    logprobs: None = None  # not computed by this server: a value is refused rather than silently dropped
    suffix: None = None  # no fill-in-the-middle

    def budget(self) -> int:
        return self.max_tokens or 16  # OpenAI's default for text completions


class EmbeddingBody(_Body):
    input: Annotated[str, Field(min_length=1)] | Annotated[
        list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=2048)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


async def read_body(request) -> dict:
    """The JSON object a request carries, read whole (so the connection can be kept for the next request)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
    if size > MAX_BODY_BYTES:
        raise RequestError(f"the request body is {size} bytes; this server takes at most {MAX_BODY_BYTES}", 413,
                           code="request_too_large")
    return parse_body(b"".join(chunks))


def parse_body(raw: bytes) -> dict:
    """Bytes -> a JSON object no deeper than MAX_DEPTH; RequestError otherwise."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise RequestError(f"the request body is nested more than {MAX_DEPTH} levels deep") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if _depth(body) > MAX_DEPTH:
        raise RequestError(f"the request body is nested more than {MAX_DEPTH} levels deep")
    return body


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, walked without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def validate(model: type[BaseModel], body: dict):
    """`model` read from `body`, or RequestError naming the first bad field as OpenAI does."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = _param(err["loc"]) or None
        message = str(err["msg"]).removeprefix("Value error, ")
        where = f"Invalid '{param}': " if param else "Invalid request: "
        raise RequestError(where + message, param=param, code="invalid_value") from None


def _param(loc: tuple) -> str:
    """('messages', 0, 'role') -> 'messages[0].role'; union branch names (pydantic's 'str', 'list[...]') dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _FIELDS:
            out += ("." if out else "") + part
    return out


_FIELDS = {name for m in (ChatCompletionBody, CompletionBody, EmbeddingBody, Message, ToolCall, FunctionCall,
                          Tool, FunctionDef, NamedToolChoice, NamedFunction, ResponseFormat, JsonSchemaSpec,
                          StreamOptions, TextPart)
           for name, f in m.model_fields.items() for name in (name, f.alias) if name}
