"""Systematic perturbations of the shared possible answers score as BFCL's checker scores them."""
from __future__ import annotations

import pytest

from agents.bfcl.checker import check_case
from agents.bfcl.data import load_category
from bfcl_answers import as_function_calling, perfect_calls


@pytest.fixture(scope="module")
def simple_cases(bfcl_dir):
    return load_category(bfcl_dir, "simple_python")


def _verdict(case, calls):
    return check_case(case, as_function_calling(calls))


def test_bfcl_wrong_function_name(simple_cases):
    for case in simple_cases:
        (name, args), = perfect_calls(case)
        v = _verdict(case, [(name + "_x", args)])
        assert v.error_type == "simple_function_checker:wrong_func_name", case.id


def test_bfcl_missing_required_param(simple_cases):
    checked = 0
    for case in simple_cases:
        (name, args), = perfect_calls(case)
        required = case.functions[0]["parameters"].get("required", [])
        if required and required[0] in args:
            args = {k: v for k, v in args.items() if k != required[0]}
            assert _verdict(case, [(name, args)]).error_type == "simple_function_checker:missing_required"
            checked += 1
    assert checked > 300


def test_bfcl_unexpected_param(simple_cases):
    for case in simple_cases:
        (name, args), = perfect_calls(case)
        v = _verdict(case, [(name, {**args, "not_a_parameter": 1})])
        assert v.error_type == "simple_function_checker:unexpected_param", case.id


def _typed_params(case, schema_type, py_type):
    """Parameters of the schema type whose answers have that Python type too (not "variables")."""
    props = case.functions[0]["parameters"]["properties"]
    (name, args), = perfect_calls(case)
    return [p for p, value in args.items()
            if props[p]["type"] == schema_type and type(value) is py_type]


def test_bfcl_wrong_type(simple_cases):
    checked = 0
    for case in simple_cases:
        (name, args), = perfect_calls(case)
        for p in _typed_params(case, "integer", int):
            v = _verdict(case, [(name, {**args, p: str(args[p])})])
            assert v.error_type == "type_error:simple", (case.id, p)
            checked += 1
        for p in _typed_params(case, "string", str):
            v = _verdict(case, [(name, {**args, p: 12345})])
            assert v.error_type == "type_error:simple", (case.id, p)
            checked += 1
    assert checked > 300


def test_bfcl_wrong_value(simple_cases):
    checked = 0
    for case in simple_cases:
        (name, args), = perfect_calls(case)
        for p in _typed_params(case, "integer", int):
            v = _verdict(case, [(name, {**args, p: args[p] + 7919})])
            assert v.error_type == "value_error:others", (case.id, p)
            checked += 1
        for p in _typed_params(case, "string", str):
            v = _verdict(case, [(name, {**args, p: "surely not an answer"})])
            assert v.error_type == "value_error:string", (case.id, p)
            checked += 1
    assert checked > 300


def test_bfcl_int_widens_to_float_but_not_back(simple_cases):
    widened = narrowed = 0
    for case in simple_cases:
        (name, args), = perfect_calls(case)
        props = case.functions[0]["parameters"]["properties"]
        for p, value in args.items():
            if props[p]["type"] == "float" and type(value) is float and value.is_integer():
                assert _verdict(case, [(name, {**args, p: int(value)})]).valid, (case.id, p)
                widened += 1
            if props[p]["type"] == "integer" and type(value) is int:
                v = _verdict(case, [(name, {**args, p: float(value)})])
                assert v.error_type == "type_error:simple", (case.id, p)
                narrowed += 1
    assert widened >= 10 and narrowed > 100


def test_bfcl_multiple_extra_call_is_wrong_count(bfcl_dir):
    for case in load_category(bfcl_dir, "multiple")[:50]:
        calls = perfect_calls(case)
        v = _verdict(case, calls + calls)
        assert v.error_type == "multiple_function_checker:wrong_count", case.id


def test_bfcl_parallel_missing_call_is_wrong_count(bfcl_dir):
    for case in load_category(bfcl_dir, "parallel")[:50]:
        v = _verdict(case, perfect_calls(case)[:-1])
        assert v.error_type == "parallel_function_checker_no_order:wrong_count", case.id


def test_bfcl_parallel_duplicate_call_cannot_match(bfcl_dir):
    checked = 0
    for case in load_category(bfcl_dir, "parallel_multiple")[:60]:
        calls = perfect_calls(case)
        if len(calls) >= 2 and calls[0] != calls[1]:
            v = _verdict(case, [calls[0]] + calls[:-1])
            assert v.error_type == "parallel_function_checker_no_order:cannot_find_match", case.id
            checked += 1
    assert checked > 30
