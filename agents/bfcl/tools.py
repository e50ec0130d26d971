"""BFCL function docs -> OpenAI-style tool schemas (JSON Schema parameters), as BFCL's FC mode sends them.

BFCL writes Python type names ("dict", "float", "tuple", "any") and allows "." in function names; JSON Schema
and OpenAI-style APIs need "object"/"number"/"array"/"string" and names matching ^[a-zA-Z0-9_-]{1,64}$.
The checker scores against the original docs and accepts the underscored names (checker.names).
"""
from __future__ import annotations

# BFCL's type names (Python categories and a few Java/JS ones) -> JSON Schema; anything else is text.
JSON_TYPES = {"integer": "integer", "number": "number", "float": "number", "double": "number",
              "string": "string", "char": "string", "any": "string", "boolean": "boolean", "bool": "boolean",
              "array": "array", "list": "array", "tuple": "array", "dict": "object", "object": "object",
              "long": "integer", "short": "integer", "byte": "integer"}
_KEEP = ("description", "enum", "default", "format", "minimum", "maximum", "minItems", "maxItems")


def tool_name(name: str) -> str:
    """BFCL's dot -> underscore rewrite of function names for OpenAI-style tools."""
    return name.replace(".", "_")


def to_json_schema(spec: dict) -> dict:
    """One parameter schema, recursively: BFCL type names mapped, nested items/properties converted."""
    bfcl_type = spec.get("type", "string")
    out = {"type": JSON_TYPES.get(bfcl_type, "string")}
    for key in _KEEP:
        if key in spec:
            out[key] = spec[key]
    if bfcl_type == "float":
        # BFCL tells FC models the same; a schema "number" alone lets them answer with integers.
        out["description"] = (out.get("description", "") + " This is a float type value.").strip()
    if bfcl_type == "any":
        out.pop("enum", None)
    if out["type"] == "array" and isinstance(spec.get("items"), dict):
        out["items"] = to_json_schema(spec["items"])
    if out["type"] == "object":
        if isinstance(spec.get("properties"), dict):
            out["properties"] = {k: to_json_schema(v) for k, v in spec["properties"].items()}
            if spec.get("required"):
                out["required"] = list(spec["required"])
        if isinstance(spec.get("additionalProperties"), dict):
            out["additionalProperties"] = to_json_schema(spec["additionalProperties"])
    if "enum" in out and out["type"] in ("array", "object"):
        del out["enum"]   # enums on containers are not valid JSON Schema constraints for their items
    return out


def to_openai_tool(doc: dict) -> dict:
    """`{"type": "function", "function": {name, description, parameters}}` for one BFCL function doc."""
    params = doc.get("parameters") or {}
    schema = {"type": "object",
              "properties": {k: to_json_schema(v) for k, v in (params.get("properties") or {}).items()}}
    if params.get("required"):
        schema["required"] = list(params["required"])
    return {"type": "function", "function": {"name": tool_name(doc["name"]),
                                             "description": doc.get("description", ""), "parameters": schema}}


def to_openai_tools(docs: list[dict]) -> list[dict]:
    return [to_openai_tool(d) for d in docs]
