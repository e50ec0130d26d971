"""Single rules of the checker and decoder on small hand-made cases."""
from __future__ import annotations

import json

import pytest

from agents.bfcl.checker import check_case
from agents.bfcl.data import BfclCase
from agents.bfcl.decode import DecodeError, decode_prompting, decode_result, is_empty

DOC = {"name": "stocks.get_price", "description": "d", "parameters": {"type": "dict", "required": ["company"],
       "properties": {"company": {"type": "string"}, "days": {"type": "integer"}, "ratio": {"type": "float"},
                      "tickers": {"type": "array", "items": {"type": "string"}},
                      "weights": {"type": "array", "items": {"type": "float"}},
                      "point": {"type": "tuple", "items": {"type": "integer"}},
                      "filters": {"type": "dict", "properties": {"market": {"type": "string"}}},
                      "live": {"type": "boolean"}}}}
ANSWER = {"stocks.get_price": {"company": ["Apple Inc.", "AAPL"], "days": [7, ""], "ratio": [0.5, ""],
                               "tickers": [["AAPL", "MSFT"], ""], "weights": [[1.0, 2.0], ""],
                               "point": [[1, 2], ""], "filters": [{"market": ["NASDAQ", ""]}, ""],
                               "live": [True, ""]}}


def case(category="simple_python", truth=None, functions=None):
    return BfclCase("x_0", category, [], functions or [DOC], truth or [ANSWER])


def ok(result, c=None):
    return check_case(c or case(), result).valid


def err(result, c=None):
    return check_case(c or case(), result).error_type


@pytest.mark.parametrize("text", [
    "[stocks.get_price(company='Apple Inc.')]",
    "stocks.get_price(company='apple inc')",               # brackets optional; case/punctuation-insensitive
    "```[stocks.get_price(company='AAPL', days=7)]```",    # backticks stripped
    "[stocks_get_price(company='AAPL')]",                  # BFCL's dot -> underscore name form
    "[stocks.get_price(company='AAPL', ratio=1/2, point=(1, 2), tickers=['aapl', 'MSFT'])]",
    "[stocks.get_price(company='AAPL', filters={'market': 'nasdaq'}, live=True, weights=[1.0, 2.0])]",
])
def test_bfcl_accepted_outputs(text):
    assert ok(text), check_case(case(), text)


@pytest.mark.parametrize("text, error_type", [
    ("[stocks.get_price(days=7)]", "simple_function_checker:missing_required"),
    ("[stocks.get_price(company='AAPL', days=True)]", "type_error:simple"),      # bool is not an integer
    ("[stocks.get_price(company='AAPL', days=7.0)]", "type_error:simple"),       # no float -> int
    ("[stocks.get_price(company='AAPL', live=1)]", "type_error:simple"),
    ("[stocks.get_price(company='AAPL', tickers=['MSFT', 'AAPL'])]", "value_error:list/tuple"),  # order counts
    ("[stocks.get_price(company='AAPL', tickers=['AAPL', 3])]", "value_error:list/tuple"),
    ("[stocks.get_price(company='AAPL', filters={'market': 'NYSE'})]", "value_error:dict_value"),
    ("[stocks.get_price(company='AAPL', filters={'region': 'US'})]", "value_error:dict_key"),
    ("[stocks.get_price(company='Apple Incorporated')]", "value_error:string"),
    ("[stocks.get_price(company='AAPL'), stocks.get_price(company='AAPL')]", "simple_function_checker:wrong_count"),
    ("[stocks.get_price(company='AAPL'", "ast_decoder:decoder_failed"),
    ("I would call the function.", "ast_decoder:decoder_failed"),
    ("[]", "simple_function_checker:wrong_count"),
])
def test_bfcl_rejected_outputs(text, error_type):
    assert err(text) == error_type


def test_bfcl_nested_item_types():
    truth = [{"stocks.get_price": {"company": ["AAPL"], "weights": [[1.0, 2.0]], "tickers": [["AAPL"]]}}]
    c = case(truth=truth)
    assert ok("[stocks.get_price(company='AAPL', weights=[1.0, 2.0], tickers=['aapl'])]", c)
    # Items get no int -> float widening ...
    assert err("[stocks.get_price(company='AAPL', weights=[1, 2], tickers=['AAPL'])]", c) == "type_error:nested"
    assert err("[stocks.get_price(company='AAPL', weights=[1.0, 2.0], tickers=[3])]", c) == "type_error:nested"
    # ... but BFCL skips the item check when "" (optional) is among the allowed values: [1, 2] == [1.0, 2.0].
    assert ok("[stocks.get_price(company='AAPL', weights=[1, 2])]")


def test_bfcl_name_modes():
    c = case()
    assert check_case(c, "[stocks.get_price(company='AAPL')]", name_mode="exact").valid
    assert not check_case(c, "[stocks_get_price(company='AAPL')]", name_mode="exact").valid
    assert check_case(c, "[stocks_get_price(company='AAPL')]", name_mode="underscore").valid


def test_bfcl_optional_param_needs_empty_string_marker():
    truth = [{"stocks.get_price": {"company": ["AAPL"], "days": [7]}}]   # days not optional in this answer
    assert err("[stocks.get_price(company='AAPL')]", case(truth=truth)) == "simple_function_checker:missing_optional"
    assert ok("[stocks.get_price(company='AAPL', days=7)]", case(truth=truth))


def test_bfcl_variable_answers_compare_literally():
    # An answer of a different type than the schema's (a string for an integer) stands for a variable name.
    truth = [{"stocks.get_price": {"company": ["AAPL"], "days": ["n_days"]}}]
    assert ok("[stocks.get_price(company='AAPL', days=n_days)]", case(truth=truth))
    assert err("[stocks.get_price(company='AAPL', days='N_days')]", case(truth=truth)) == "value_error:others"


def test_bfcl_function_calling_format():
    args = json.dumps({"company": "AAPL", "days": 7})
    assert ok([{"stocks.get_price": args}])
    assert ok([{"stocks_get_price": {"company": "AAPL"}}])
    assert err([{"stocks.get_price": "{not json"}]) == "ast_decoder:decoder_failed"
    assert err(["stocks.get_price"]) == "ast_decoder:decoder_failed"


def test_bfcl_parallel_and_multiple_dispatch():
    other = {"name": "weather", "parameters": {"type": "dict", "required": ["city"],
                                              "properties": {"city": {"type": "string"}}}}
    truth = [{"weather": {"city": ["Paris"]}}, {"weather": {"city": ["Rome"]}}]
    par = case("parallel", truth, [other])
    assert ok("[weather(city='Rome'), weather(city='Paris')]", par)
    assert err("[weather(city='Rome'), weather(city='Rome')]", par) == \
        "parallel_function_checker_no_order:cannot_find_match"
    mult = case("multiple", [{"weather": {"city": ["Paris"]}}], [DOC, other])
    assert ok("[weather(city='paris')]", mult)
    assert err("[stocks.get_price(company='AAPL')]", mult) == "simple_function_checker:wrong_func_name"


def test_bfcl_irrelevance_rules():
    irr = case("irrelevance", None)
    irr = BfclCase("irrelevance_0", "irrelevance", [], [DOC], None)
    for text in ("Sorry, no function fits.", "[]", "", "```\nnothing\n```", 42):
        assert check_case(irr, text).valid, text
    assert check_case(irr, "[stocks.get_price(company='AAPL')]").error_type == "irrelevance_error:decoder_success"
    rel = BfclCase("live_relevance_0", "live_relevance", [], [DOC], None)
    assert check_case(rel, "[stocks.get_price(company='AAPL')]").valid
    assert check_case(rel, "no call").error_type == "relevance_error:decoder_failed"


def test_bfcl_decoder_values():
    calls = decode_prompting("[a.b.c(x=-3, y=+2.5, z=2**3, w=[1, (2, 3)], v={'k': None}, u=foo, t=g(1), s=h(k=1))]")
    assert calls == [{"a.b.c": {"x": -3, "y": 2.5, "z": 8, "w": [1, (2, 3)], "v": {"k": None}, "u": "foo",
                                "t": "g(1)", "s": {"h": {"k": 1}}}}]
    assert decode_prompting("f(1, a=2)") == [{"f": {"a": 2}}]     # positional arguments are dropped
    with pytest.raises(DecodeError):
        decode_prompting("[f(a=1), 3]")
    with pytest.raises(DecodeError):
        decode_result({"f": "{}"})
    assert is_empty([]) and is_empty([{}]) and is_empty("text") and not is_empty([{"f": {}}])
