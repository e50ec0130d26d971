"""Tool schemas as the grammar sees them: every string and array bounded, timezones made an enum.

A small model under a grammar never writes an invalid token, but nothing stops it from writing valid ones
forever: an unbounded string argument ran to max_tokens ("UTC_Asia_Bangakai_2022_12_25_2022...", 128 tokens),
so the call never closed. The grammar (never the prompt: the model sees the schema as the tool gave it) gets:
- `maxLength: MAX_STRING_CHARS` on every string without its own bound (maxLength, enum, const, pattern,
  format). 128 characters: the longest of the 4,970 allowed string values in BFCL's answers (simple_python,
  multiple, parallel, parallel_multiple) is 102 characters and 99% are 26 or fewer, so 128 never cuts a
  right answer there, and a runaway stops after ~30-40 tokens, inside a small max_tokens (256 characters,
  tried first, let a runaway string run past BFCL's 96-token budget: docs/benchmarks.md). Longer text
  arguments (file contents, long SQL) need a tool schema with its own maxLength.
- `maxItems: MAX_ARRAY_ITEMS` on every array without one (a list can repeat an item forever too).
- an enum of the IANA zone names (`zoneinfo.available_timezones()`) for a string that names a timezone: its
  property name ends in "timezone"/"time_zone"/"tz", or its description says "IANA" (mcp-server-time's
  `timezone`, `source_timezone`, `target_timezone`), so a call can only carry a zone the tool accepts.
"""
from __future__ import annotations

import copy
import re
from functools import lru_cache

MAX_STRING_CHARS = 128
MAX_ARRAY_ITEMS = 64
_STRING_BOUNDS = ("maxLength", "enum", "const", "pattern", "format")
_TZ_NAME = re.compile(r"(^|_)(time_?zone|tz)$", re.I)


@lru_cache(maxsize=1)
def iana_zones() -> tuple[str, ...]:
    import zoneinfo

    return tuple(sorted(zoneinfo.available_timezones()))


def names_a_timezone(name: str, prop: dict) -> bool:
    """A string property that holds an IANA zone name, judged by its name or its description."""
    if prop.get("type") != "string" or any(k in prop for k in ("enum", "const", "pattern")):
        return False
    return bool(_TZ_NAME.search(name)) or "iana" in str(prop.get("description", "")).lower()


def bounded_schema(schema: dict | None) -> dict:
    """A copy of a tool's parameter schema with the bounds above added; the input is left unchanged."""
    if not schema:
        return {"type": "object", "properties": {}}
    return _bound(copy.deepcopy(schema), "")


def _bound(node, name: str):
    if not isinstance(node, dict):
        return node
    if names_a_timezone(name, node) and iana_zones():
        node["enum"] = list(iana_zones())
    elif node.get("type") == "string" and not any(k in node for k in _STRING_BOUNDS):
        node["maxLength"] = MAX_STRING_CHARS
    if node.get("type") == "array" and "maxItems" not in node:
        node["maxItems"] = MAX_ARRAY_ITEMS
    if isinstance(node.get("properties"), dict):  # a malformed schema is left for the grammar to refuse
        node["properties"] = {key: _bound(value, key) for key, value in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _bound(node["items"], "")
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(node.get(key), list):
            node[key] = [_bound(v, name) for v in node[key]]
    for key in ("$defs", "definitions"):
        if isinstance(node.get(key), dict):
            node[key] = {k: _bound(v, k) for k, v in node[key].items()}
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _bound(node["additionalProperties"], "")
    return node
