"""Model output -> calls `[{function_name: {param: value}}]`, as BFCL's decoders do.

Two result formats (BFCL's result files):
- prompting style: a string such as `[func(a=1, b='x'), mod.g(c=[1, 2])]`, parsed with `ast` the way BFCL's
  `default_decode_ast_prompting` does (strip backticks/newlines/spaces at both ends, wrap in `[...]`);
- function-calling style: a list of `{function_name: arguments}` where arguments is a JSON string (or an
  already-decoded dict).
Anything that cannot be decoded raises `DecodeError`: for AST categories that is a failed case, for the
irrelevance category it counts as "no call".

Model output is hostile input here: decoding bounds its work and says `DecodeError` instead of hanging or
crashing. Constant arithmetic is evaluated only while its result stays under MAX_INT_BITS bits (checked
before computing: `((9**999)**999)**999` hung the scorer); values nest at most MAX_DEPTH deep (5,000 unary
minus signs, 3,000 chained `+` and 100,000-deep JSON ended in RecursionError); a case gets MAX_SECONDS of
decoding; a dict key that cannot be a key (a list) is a decode error.
"""
from __future__ import annotations

import ast
import json
import operator
import time

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


MAX_INT_BITS = 4096   # an integer result of constant arithmetic: ~1,233 decimal digits
MAX_DEPTH = 100       # nesting of values (lists, dicts, calls, operators); BFCL's answers nest 4 at most
MAX_SECONDS = 2.0     # decoding time per case
MAX_CHARS = 200_000   # a result longer than this is not a call list a model meant


class DecodeError(ValueError):
    """The model output is not a function call list in either BFCL format."""


class _Budget:
    """Depth and time bounds of one decode."""

    def __init__(self):
        self.deadline = time.monotonic() + MAX_SECONDS

    def enter(self, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise DecodeError(f"values nest deeper than {MAX_DEPTH} levels")
        if time.monotonic() > self.deadline:
            raise DecodeError(f"decoding took longer than {MAX_SECONDS:g} s")
        return depth + 1


def decode_result(result) -> list[dict]:
    """Decode one `result` field (string or function-calling list) into BFCL's call list."""
    try:
        if isinstance(result, str):
            return decode_prompting(result)
        if isinstance(result, list):
            return decode_function_calling(result)
    except (RecursionError, MemoryError) as exc:  # a last guard: the bounds below should come first
        raise DecodeError(f"output too deeply nested or too large to decode ({type(exc).__name__})") from None
    raise DecodeError(f"result must be a string or a list, not {type(result).__name__}")


def _depth_ok(value, limit: int = MAX_DEPTH) -> bool:
    """Whether a decoded JSON value nests at most `limit` levels (iteratively: no recursion to blow)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def decode_function_calling(items: list) -> list[dict]:
    """`[{name: "{json args}"}]` -> `[{name: {args}}]`; like BFCL, only each item's first key is read."""
    calls = []
    for item in items:
        if not isinstance(item, dict) or not item:
            raise DecodeError(f"function-calling item {item!r} is not a non-empty {{name: arguments}} object")
        name, args = next(iter(item.items()))
        if isinstance(args, str):
            if len(args) > MAX_CHARS:
                raise DecodeError(f"arguments of {name!r} are longer than {MAX_CHARS} characters")
            try:
                args = json.loads(args)
            except json.JSONDecodeError as exc:
                raise DecodeError(f"arguments of {name!r} are not valid JSON: {exc.msg}") from None
            except RecursionError:
                raise DecodeError(f"arguments of {name!r} nest too deeply") from None
        if not _depth_ok(args):
            raise DecodeError(f"arguments of {name!r} nest deeper than {MAX_DEPTH} levels")
        calls.append({name: args})
    return calls


def decode_prompting(text: str) -> list[dict]:
    """BFCL's default prompting decoder: `[f(a=1), g(b=2)]` (brackets optional) -> calls."""
    if len(text) > MAX_CHARS:
        raise DecodeError(f"output longer than {MAX_CHARS} characters")
    text = text.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    # BFCL strips quotes that a model may wrap around the whole list.
    text = text.strip().strip("'")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise DecodeError(f"not a Python call list: {exc}") from None
    except (RecursionError, MemoryError):
        raise DecodeError("not a Python call list: nested too deeply to parse") from None
    body = tree.body
    budget = _Budget()
    if isinstance(body, ast.Call):
        return [_call(body, budget, 0)]
    if not isinstance(body, (ast.List, ast.Tuple)):
        raise DecodeError(f"expected a list of calls, got {type(body).__name__}")
    calls = []
    for elem in body.elts:
        if not isinstance(elem, ast.Call):
            raise DecodeError(f"list element {ast.unparse(elem)!r} is not a function call")
        calls.append(_call(elem, budget, 0))
    return calls


def _call(node: ast.Call, budget: _Budget, depth: int) -> dict:
    # Dotted names (`math.factorial`) are kept with their dots; positional arguments are ignored, as in BFCL.
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    depth = budget.enter(depth)
    return {".".join(reversed(parts)): {kw.arg: _value(kw.value, budget, depth)
                                        for kw in node.keywords if kw.arg is not None}}


def _text(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except (RecursionError, MemoryError, ValueError):
        raise DecodeError("a value too deeply nested to show") from None


def _value(node: ast.AST, budget: _Budget, depth: int):
    depth = budget.enter(depth)
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.List):
        return [_value(v, budget, depth) for v in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(v, budget, depth) for v in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise DecodeError("`**` unpacking inside a dict argument is not a value")
        out = {}
        for k, v in zip(node.keys, node.values):
            key = _value(k, budget, depth)
            try:
                out[key] = _value(v, budget, depth)
            except TypeError:
                raise DecodeError(f"dict key {_text(k)!r} cannot be a key (not hashable)") from None
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand, budget, depth)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
        return _text(node)
    if isinstance(node, ast.BinOp):
        return _arith(node, budget, depth)
    if isinstance(node, ast.Name):
        return node.id          # a variable name stands for itself (BFCL compares it as a string)
    if isinstance(node, ast.Call):
        # A call used as a value: plain text without keywords, a nested call dict with them (as BFCL).
        return _call(node, budget, depth) if node.keywords else _text(node)
    if isinstance(node, (ast.Lambda, ast.Subscript, ast.Attribute)):
        return _text(node)
    raise DecodeError(f"unsupported value {_text(node)!r} ({type(node).__name__})")


def _arith(node: ast.BinOp, budget: _Budget, depth: int):
    """Constant arithmetic such as `3*4` or `2**10` (BFCL evaluates it); anything else stays text. Integer
    results are computed only when their size bound (from the operands' bit lengths) is under MAX_INT_BITS."""
    left, right = _value(node.left, budget, depth), _value(node.right, budget, depth)
    op = _BINOPS.get(type(node.op))
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (left, right))
    if op is None or not numbers:
        return _text(node)
    if not _small_enough(node.op, left, right):
        raise DecodeError(f"constant arithmetic {_text(node)[:60]!r} is too large to evaluate "
                          f"(over {MAX_INT_BITS} bits or an exponent over 1000)")
    try:
        return op(left, right)
    except (ZeroDivisionError, OverflowError, ValueError):
        return _text(node)


def _bits(x) -> int:
    return abs(int(x)).bit_length() if isinstance(x, int) else 64


def _small_enough(op: ast.operator, left, right) -> bool:
    """An upper bound on the result's size stays under MAX_INT_BITS (floats overflow to an error instead)."""
    if isinstance(op, ast.Pow):
        if abs(right) > 1000:
            return False
        if isinstance(left, int) and isinstance(right, int):
            return _bits(left) * max(int(right), 1) <= MAX_INT_BITS
        return True
    if isinstance(op, ast.Mult):
        return _bits(left) + _bits(right) <= MAX_INT_BITS
    return max(_bits(left), _bits(right)) <= MAX_INT_BITS


def is_call_list(decoded) -> bool:
    """BFCL's format check: a list of one-key dicts whose value is a dict of arguments (`[]` passes)."""
    return isinstance(decoded, list) and all(
        isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict)
        for item in decoded)


def is_empty(decoded) -> bool:
    """BFCL's "no call" test for relevance: not a call list, `[]`, or `[{}]`."""
    return not is_call_list(decoded) or len(decoded) == 0 or (len(decoded) == 1 and len(decoded[0]) == 0)
