"""Per-case verdicts with BFCL's AST rules: simple, multiple, parallel (order-free) and relevance.

`check_case(case, result)` takes the raw `result` field of a results file, decodes it (decode.py) and
returns a `Verdict` with BFCL's `error_type` labels. Function names match exactly, or in BFCL's
dot -> underscore form (OpenAI-style tool names cannot hold "."); see `names` below.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from agents.bfcl.data import BfclCase, is_relevance
from agents.bfcl.decode import DecodeError, decode_result, is_call_list, is_empty
from agents.bfcl.values import Problem, check_param


@dataclass
class Verdict:
    """Outcome of one case: `valid`, BFCL's `error_type` (None when valid), a message, the decoded calls."""

    valid: bool
    error_type: str | None = None
    error: str = ""
    decoded: list[dict] | None = field(default=None, repr=False)


def names(expected: str, mode: str = "either") -> tuple[str, ...]:
    """Accepted spellings of an expected function name. BFCL turns "." into "_" for models whose API
    forbids dots (`underscore_to_dot` in its model config); without a model config, `either` accepts both."""
    underscored = expected.replace(".", "_")
    return {"exact": (expected,), "underscore": (underscored,)}.get(mode, (expected, underscored))


def check_call(doc: dict, call: dict, answer: dict, name_mode: str = "either") -> Problem | None:
    """BFCL's simple_function_checker: one model call against one expected call {name: {param: allowed}}."""
    allowed_params = next(iter(answer.values()))
    properties = doc.get("parameters", {}).get("properties", {})
    found = [n for n in names(doc["name"], name_mode) if n in call]
    if not found:
        return Problem("simple_function_checker:wrong_func_name",
                       f"Function name {doc['name']!r} not found in model output {list(call)}.")
    args = call[found[0]]
    for param in doc.get("parameters", {}).get("required", []):
        if param not in args:
            return Problem("simple_function_checker:missing_required", f"Missing required parameter: {param!r}.")
    for param, value in args.items():
        if param not in properties or param not in allowed_params:
            return Problem("simple_function_checker:unexpected_param", f"Unexpected parameter: {param!r}.")
        problem = check_param(param, value, allowed_params[param], properties[param])
        if problem is not None:
            return problem
    for param, allowed in allowed_params.items():
        if param not in args and "" not in allowed:
            return Problem("simple_function_checker:missing_optional",
                           f"Optional parameter {param!r} not provided and not marked as optional.")
    return None


def _doc(functions: list[dict], name: str) -> dict:
    return next((f for f in functions if f["name"] == name), functions[0])


def check_calls(case: BfclCase, calls: list[dict], name_mode: str = "either") -> Problem | None:
    """BFCL's ast_checker dispatch: "parallel" in the category -> order-free; "multiple" -> first call
    against the one expected call; otherwise simple (exactly one call, checked against the first doc)."""
    truth = case.ground_truth
    if "parallel" in case.category:
        if len(calls) != len(truth):
            return Problem("parallel_function_checker_no_order:wrong_count",
                           f"Wrong number of functions: {len(calls)} for {len(truth)} expected.")
        used: set[int] = set()
        # Greedy, as BFCL: each expected call takes the first unused model call that passes.
        for i, answer in enumerate(truth):
            doc = _doc(case.functions, next(iter(answer)))
            match = next((j for j, call in enumerate(calls)
                          if j not in used and check_call(doc, call, answer, name_mode) is None), None)
            if match is None:
                return Problem("parallel_function_checker_no_order:cannot_find_match",
                               f"No model call matches expected call {i} ({next(iter(answer))}).")
            used.add(match)
        return None
    if "multiple" in case.category:
        if len(calls) != len(truth):
            return Problem("multiple_function_checker:wrong_count",
                           f"Wrong number of functions: {len(calls)} for {len(truth)} expected.")
        return check_call(_doc(case.functions, next(iter(truth[0]))), calls[0], truth[0], name_mode)
    if len(calls) != 1:
        return Problem("simple_function_checker:wrong_count", f"Wrong number of functions: {len(calls)}.")
    return check_call(case.functions[0], calls[0], truth[0], name_mode)


def check_case(case: BfclCase, result, name_mode: str = "either") -> Verdict:
    """Decode `result` and judge it. Relevance categories: valid iff the presence of a call is right."""
    try:
        calls = decode_result(result)
    except DecodeError as exc:
        if is_relevance(case.category):
            return _relevance(case, False, None, str(exc))
        return Verdict(False, "ast_decoder:decoder_failed", f"Invalid syntax. Failed to decode AST. {exc}")
    if is_relevance(case.category):
        return _relevance(case, not is_empty(calls), calls, "")
    if not is_call_list(calls):
        return Verdict(False, "ast_decoder:decoder_wrong_output_format",
                       "Did not output in the specified format.", calls)
    problem = check_calls(case, calls, name_mode)
    if problem is None:
        return Verdict(True, None, "", calls)
    return Verdict(False, problem.error_type, problem.message, calls)


def _relevance(case: BfclCase, has_call: bool, calls, decode_error: str) -> Verdict:
    if "irrelevance" in case.category:
        if has_call:
            return Verdict(False, "irrelevance_error:decoder_success",
                           "Valid syntax. Successfully decode AST when it should not.", calls)
        return Verdict(True, None, "", calls)
    if has_call:
        return Verdict(True, None, "", calls)
    return Verdict(False, "relevance_error:decoder_failed",
                   f"Invalid syntax. Failed to decode AST when it should have. {decode_error}", calls)
