"""Per-parameter rules of BFCL's Python AST checker: type check, then value check.

Every rule here mirrors a behaviour of the official checker (ast_checker.py in ShishirPatil/gorilla,
berkeley-function-call-leaderboard); docs/bfcl.md lists them with the quirks kept on purpose.
A check returns `Problem | None`: None means the parameter passes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# BFCL's PYTHON_TYPE_MAPPING ("tuple" is a list because answers went through JSON; "any" is compared as
# text). The JSON-Schema names after it are our addition, for function docs that use them (live data).
PY_TYPES = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list,
            "dict": dict, "any": str,
            "number": float, "object": dict, "list": list, "bool": bool}
NESTED = ("array", "tuple")   # types whose items are type-checked too (one level deep, as BFCL)
_PUNCT = re.compile(r"[ ,./\-_*^]")


@dataclass
class Problem:
    """Why a parameter (or call) fails, with BFCL's error_type label."""

    error_type: str
    message: str


def standardize(text: str) -> str:
    """BFCL's string normalisation: drop spaces and `,./-_*^`, lower-case, single -> double quotes."""
    return _PUNCT.sub("", text).lower().replace("'", '"')


def _answer_type(allowed: list):
    # The type of the first allowed value that is not "" ("" marks an optional parameter).
    for option in allowed:
        if option != "":
            return type(option)
    return None


def check_type(param: str, value, allowed: list, type_name: str, expected: type, nested: type | None):
    """Returns (problem, is_variable). `is_variable`: the answers' type differs from the schema's (BFCL
    stores a variable name as a string), so the value is compared literally, not by the typed rules."""
    answer_type = _answer_type(allowed)
    is_variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:   # exact type: True is not an integer, 1 is not a float (widened earlier)
        if nested is None:
            return None, is_variable
        for option in allowed:
            # Every item must type-check against this option; a non-list option ("" = optional) passes.
            if isinstance(option, list) and not all(
                    check_type(param, item, option, nested.__name__, nested, None)[0] is None for item in value):
                continue
            return None, is_variable
        msg = (f"Nested type checking failed for parameter {param!r}: expected {type_name} of "
               f"{nested.__name__}, got {value!r}.")
        # BFCL falls through to its variable test here, which cannot make the value valid any more.
        kind = "type_error:nested" if answer_type is not None and type(value) is answer_type else "type_error:simple"
        return Problem(kind, msg), False
    if answer_type is not None and type(value) is answer_type:
        return None, True
    return Problem("type_error:simple", f"Incorrect type for parameter {param!r}: expected {type_name}, "
                                        f"got {type(value).__name__} ({value!r})."), False


def check_string(param: str, value: str, allowed: list):
    if standardize(value) in [standardize(a) for a in allowed if isinstance(a, str)]:
        return None
    return Problem("value_error:string", f"Invalid value for {param!r}: {value!r}; expected one of {allowed} "
                                         f"(case and punctuation insensitive).")


def _std_items(items) -> list:
    return [standardize(x) if isinstance(x, str) else x for x in items]


def check_list(param: str, value: list, allowed: list):
    # Only top-level string items are normalised; a "" option turns into [] here (BFCL's loop over a str).
    if _std_items(value) in [_std_items(option) for option in allowed]:
        return None
    return Problem("value_error:list/tuple", f"Invalid value for {param!r}: {value!r}; expected one of {allowed}.")


def check_dict(param: str, value, allowed: list):
    """A dict matches one allowed dict: no unknown keys, each value allowed, keys without "" present."""
    problem = Problem("dict_checker:unclear", f"No allowed dict for {param!r}.")
    for option in allowed:
        if option == "":
            continue
        problem = _dict_against(value, option)
        if problem is None:
            return None
    return problem


def _dict_against(value, option: dict):
    if not isinstance(value, dict):   # BFCL would crash here; a non-dict simply does not match
        return Problem("value_error:dict_value", f"{value!r} is not a dict.")
    for key, item in value.items():
        if key not in option:
            return Problem("value_error:dict_key", f"Unexpected dict key parameter: {key!r}.")
        item = standardize(item) if isinstance(item, str) else item
        if item not in _std_items(option[key]):
            return Problem("value_error:dict_value",
                           f"Invalid value for dict key {key!r}: {item!r}; expected one of {option[key]}.")
    for key, options in option.items():
        if key not in value and "" not in options:
            return Problem("value_error:dict_key", f"Missing dict key parameter: {key!r}.")
    return None


def check_list_of_dicts(param: str, value: list, allowed: list):
    """Each allowed list of dicts is tried in order; dicts are compared position by position."""
    problem = Problem("list_dict_checker:unclear", f"No allowed list of dicts for {param!r}.")
    for option in allowed:
        if len(value) != len(option):
            problem = Problem("value_error:list_dict_count", "Wrong number of dictionaries in the list.")
            continue
        for got, want in zip(value, option):
            problem = check_dict(param, got, [want])
            if problem is not None:
                break
        else:
            return None
    return problem


def check_param(param: str, value, allowed: list, schema: dict):
    """Type then value check of one parameter against its schema entry and its allowed values."""
    type_name = schema.get("type", "string")
    expected = PY_TYPES.get(type_name, str)
    nested = None
    if type_name in NESTED:
        nested = PY_TYPES.get(schema.get("items", {}).get("type", "string"), str)
    if type_name == "tuple" and type(value) is tuple:
        value = list(value)          # answers hold tuples as JSON lists
    if type_name in ("float", "number") and type(value) is int:
        value = float(value)         # Python's int -> float widening, which BFCL allows
    problem, is_variable = check_type(param, value, allowed, type_name, expected, nested)
    if problem is not None:
        return problem
    if not is_variable:
        if expected is dict:
            return check_dict(param, value, allowed)
        if expected is list and nested is dict:
            return check_list_of_dicts(param, value, allowed)
        if expected is str:
            return check_string(param, value, allowed)
        if expected is list:
            return check_list(param, value, allowed)
    if value not in allowed:
        return Problem("value_error:others", f"Invalid value for {param!r}: {value!r}; expected one of {allowed}.")
    return None
