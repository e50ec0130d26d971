"""BFCL function docs -> OpenAI tool schemas that JSON Schema (and the grammar compiler) accept."""
from __future__ import annotations

import json

import jsonschema
import pytest

from agents.bfcl.data import load_cases
from agents.bfcl.prompts import free_messages
from agents.bfcl.tools import to_openai_tool, to_openai_tools


@pytest.fixture(scope="module")
def all_functions(bfcl_dir):
    return [f for case in load_cases(bfcl_dir) for f in case.functions]


def test_bfcl_tool_schemas_are_json_schema(all_functions):
    assert len(all_functions) > 1500
    meta = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    for i, doc in enumerate(all_functions):
        tool = to_openai_tool(doc)
        assert tool["type"] == "function" and "." not in tool["function"]["name"]
        if i % 8 == 0:   # meta-schema validation of every 8th: all of them take ~15 s on 2 cores
            meta.validate(tool["function"]["parameters"])
        text = json.dumps(tool)
        assert '"dict"' not in text and '"float"' not in text.replace('"format": "float"', "")


def test_bfcl_type_mapping():
    doc = {"name": "a.b", "description": "d", "parameters": {"type": "dict", "required": ["x"], "properties": {
        "x": {"type": "float", "description": "X."},
        "t": {"type": "tuple", "items": {"type": "integer"}},
        "d": {"type": "dict", "properties": {"k": {"type": "any"}}, "required": ["k"]},
        "l": {"type": "array", "items": {"type": "dict", "properties": {"v": {"type": "boolean"}}}}}}}
    fn = to_openai_tool(doc)["function"]
    props = fn["parameters"]["properties"]
    assert fn["name"] == "a_b" and fn["parameters"]["required"] == ["x"]
    assert props["x"] == {"type": "number", "description": "X. This is a float type value."}
    assert props["t"] == {"type": "array", "items": {"type": "integer"}}
    assert props["d"] == {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]}
    assert props["l"]["items"]["properties"]["v"] == {"type": "boolean"}


def test_bfcl_tool_schemas_compile_to_grammars(all_functions):
    xgr = pytest.importorskip("xgrammar")
    for doc in all_functions[::24]:   # a sample: compiling all ~1,900 takes tens of seconds on 2 cores
        xgr.Grammar.from_json_schema(json.dumps(to_openai_tools([doc])[0]["function"]["parameters"]))


def test_bfcl_free_prompt_keeps_data_system_message():
    turn = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    msgs = free_messages(turn, [{"name": "f", "parameters": {"type": "dict", "properties": {}}}])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"].endswith("Be brief.") and '"name": "f"' in msgs[0]["content"]
