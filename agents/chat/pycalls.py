"""Parse Python-call style tool calls: `f(a=1)`, `[f(a=1), g(b="x")]`, one call per line (MiniCPM4-MCP).

Only keyword arguments carry meaning (a tool's parameters are named), so a positional argument is reported
as an error the model can act on instead of being silently dropped as MiniCPM's reference parser does.
Names that Python cannot parse are handled deliberately rather than with MiniCPM's `-`/`_` swap: every call
head (`server.tool-name(`) is replaced by a placeholder before `ast.parse` and restored exactly afterwards, and
parameters named after Python keywords (`from=`, `class=`) are escaped the same way.
"""
from __future__ import annotations

import ast
import keyword
import re

# A call head: a name that may hold dots (MCP namespacing) and hyphens, followed by "(".
_CALL_HEAD = re.compile(r"(?<![\w.\-'\"\\])([A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*)\s*\(")
_KEYWORD_ARG = re.compile(r"(?<=[(,\s])(" + "|".join(keyword.kwlist) + r")(\s*=)(?!=)")
_FN_PREFIX = "__cpm_fn_"
_KW_PREFIX = "__cpm_kw_"
_PLACEHOLDER = re.compile(_FN_PREFIX + r"(\d+)\(")
# JSON spellings that small models write inside Python calls.
_JSON_NAMES = {"true": True, "false": False, "null": None}


class PyCallError(ValueError):
    """The text is not a list of keyword-argument Python calls; the message says what is wrong."""


def parse_python_calls(text: str) -> list[tuple[str, dict]]:
    """Parse `f(a=1)`, `[f(a=1), g(b=2)]` or several calls on separate lines into (name, args) pairs."""
    heads: list[tuple[str, str]] = []  # (name, the exact text replaced) per placeholder

    def _hide_head(m: re.Match) -> str:
        heads.append((m.group(1), m.group(0)))
        return f"{_FN_PREFIX}{len(heads) - 1}("

    source = _CALL_HEAD.sub(_hide_head, text.strip())
    source = _KEYWORD_ARG.sub(lambda m: f"{_KW_PREFIX}{m.group(1)}{m.group(2)}", source)
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        # No column: it would count in the rewritten source, not in what the model wrote.
        raise PyCallError(f"not valid Python call syntax (line {exc.lineno}): {exc.msg}")
    except (ValueError, RecursionError, MemoryError) as exc:
        raise PyCallError(f"not valid Python call syntax: {type(exc).__name__}")
    nodes = _call_nodes(tree)
    return [_one_call(node, heads) for node in nodes]


def _call_nodes(tree: ast.Module) -> list[ast.Call]:
    """The call expressions of a module: bare calls, one per statement, or one list/tuple of calls."""
    if not tree.body:
        raise PyCallError("no function call found")
    calls: list[ast.Call] = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            raise PyCallError("expected only function calls like name(arg=value)")
        value = stmt.value
        items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
        for item in items:
            if not isinstance(item, ast.Call):
                raise PyCallError("expected only function calls like name(arg=value)")
            calls.append(item)
    if not calls:
        raise PyCallError("no function call found")
    return calls


def _one_call(node: ast.Call, heads: list[tuple[str, str]]) -> tuple[str, dict]:
    if not (isinstance(node.func, ast.Name) and node.func.id.startswith(_FN_PREFIX)):
        raise PyCallError("a call must name a tool directly, like name(arg=value)")
    name = heads[int(node.func.id[len(_FN_PREFIX):])][0]
    if node.args:
        raise PyCallError(f"{name}(): positional arguments are not allowed; write every argument as key=value")
    args: dict = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise PyCallError(f"{name}(): **kwargs is not allowed; write every argument as key=value")
        key = kw.arg[len(_KW_PREFIX):] if kw.arg.startswith(_KW_PREFIX) else kw.arg
        args[key] = _restore(_literal(kw.value, name, key), heads)
    return name, args


def _restore(value, heads: list[tuple[str, str]]):
    """Undo the placeholders inside string values (a string argument may itself contain `g(` or `from=`)."""
    if isinstance(value, str):
        value = _PLACEHOLDER.sub(lambda m: heads[int(m.group(1))][1], value)
        return value.replace(_KW_PREFIX, "")
    if isinstance(value, list):
        return [_restore(v, heads) for v in value]
    if isinstance(value, dict):
        return {_restore(k, heads): _restore(v, heads) for k, v in value.items()}
    return value


def _literal(node: ast.expr, name: str, key: str):
    """A constant value: Python literals, plus true/false/null written JSON-style."""
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, ast.List):
        return [_literal(e, name, key) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return [_literal(e, name, key) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise PyCallError(f"{name}(): argument {key!r} unpacks a dict; write the value out")
            k_value = _literal(k, name, key)
            if not isinstance(k_value, (str, int, float, bool)) and k_value is not None:
                raise PyCallError(f"{name}(): argument {key!r} has a dict key that is not a string")
            out[k_value] = _literal(v, name, key)
        return out
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise PyCallError(f"{name}(): argument {key!r} is not a constant value (use a string, number, "
                          "true/false, null, list or dict)")
