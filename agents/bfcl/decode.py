"""Model output -> calls `[{function_name: {param: value}}]`, as BFCL's decoders do.

Two result formats (BFCL's result files):
- prompting style: a string such as `[func(a=1, b='x'), mod.g(c=[1, 2])]`, parsed with `ast` the way BFCL's
  `default_decode_ast_prompting` does (strip backticks/newlines/spaces at both ends, wrap in `[...]`);
- function-calling style: a list of `{function_name: arguments}` where arguments is a JSON string (or an
  already-decoded dict).
Anything that cannot be decoded raises `DecodeError`: for AST categories that is a failed case, for the
irrelevance category it counts as "no call".
"""
from __future__ import annotations

import ast
import json
import operator

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


class DecodeError(ValueError):
    """The model output is not a function call list in either BFCL format."""


def decode_result(result) -> list[dict]:
    """Decode one `result` field (string or function-calling list) into BFCL's call list."""
    if isinstance(result, str):
        return decode_prompting(result)
    if isinstance(result, list):
        return decode_function_calling(result)
    raise DecodeError(f"result must be a string or a list, not {type(result).__name__}")


def decode_function_calling(items: list) -> list[dict]:
    """`[{name: "{json args}"}]` -> `[{name: {args}}]`; like BFCL, only each item's first key is read."""
    calls = []
    for item in items:
        if not isinstance(item, dict) or not item:
            raise DecodeError(f"function-calling item {item!r} is not a non-empty {{name: arguments}} object")
        name, args = next(iter(item.items()))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as exc:
                raise DecodeError(f"arguments of {name!r} are not valid JSON: {exc.msg}") from None
        calls.append({name: args})
    return calls


def decode_prompting(text: str) -> list[dict]:
    """BFCL's default prompting decoder: `[f(a=1), g(b=2)]` (brackets optional) -> calls."""
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
    body = tree.body
    if isinstance(body, ast.Call):
        return [_call(body)]
    if not isinstance(body, (ast.List, ast.Tuple)):
        raise DecodeError(f"expected a list of calls, got {type(body).__name__}")
    calls = []
    for elem in body.elts:
        if not isinstance(elem, ast.Call):
            raise DecodeError(f"list element {ast.unparse(elem)!r} is not a function call")
        calls.append(_call(elem))
    return calls


def _call(node: ast.Call) -> dict:
    # Dotted names (`math.factorial`) are kept with their dots; positional arguments are ignored, as in BFCL.
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return {".".join(reversed(parts)): {kw.arg: _value(kw.value) for kw in node.keywords if kw.arg is not None}}


def _value(node: ast.AST):
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.List):
        return [_value(v) for v in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value(v) for v in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise DecodeError("`**` unpacking inside a dict argument is not a value")
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
        return ast.unparse(node)
    if isinstance(node, ast.BinOp):
        return _arith(node)
    if isinstance(node, ast.Name):
        return node.id          # a variable name stands for itself (BFCL compares it as a string)
    if isinstance(node, ast.Call):
        # A call used as a value: plain text without keywords, a nested call dict with them (as BFCL).
        return _call(node) if node.keywords else ast.unparse(node)
    if isinstance(node, (ast.Lambda, ast.Subscript, ast.Attribute)):
        return ast.unparse(node)
    raise DecodeError(f"unsupported value {ast.unparse(node)!r} ({type(node).__name__})")


def _arith(node: ast.BinOp):
    """Constant arithmetic such as `3*4` or `2**10` (BFCL evaluates it); anything else stays text."""
    left, right = _value(node.left), _value(node.right)
    op = _BINOPS.get(type(node.op))
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (left, right))
    if op is None or not numbers or (isinstance(node.op, ast.Pow) and abs(right) > 1000):
        return ast.unparse(node)
    try:
        return op(left, right)
    except (ZeroDivisionError, OverflowError):
        return ast.unparse(node)


def is_call_list(decoded) -> bool:
    """BFCL's format check: a list of one-key dicts whose value is a dict of arguments (`[]` passes)."""
    return isinstance(decoded, list) and all(
        isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict)
        for item in decoded)


def is_empty(decoded) -> bool:
    """BFCL's "no call" test for relevance: not a call list, `[]`, or `[{}]`."""
    return not is_call_list(decoded) or len(decoded) == 0 or (len(decoded) == 1 and len(decoded[0]) == 0)
