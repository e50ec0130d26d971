"""Turns an MCP CallToolResult into text a model can read: images and binaries become placeholders, JSON is
pretty-printed, and a huge result is cut with a note that says so (a small model's context is short)."""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

DEFAULT_MAX_CHARS = 8_000


def _size(b64: str) -> str:
    try:
        n = len(base64.b64decode(b64, validate=False))
    except (binascii.Error, ValueError):
        n = len(b64) * 3 // 4
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def block_text(block: Any) -> str:
    """One content block -> text; anything that is not text gets a placeholder naming what it was."""
    kind = getattr(block, "type", None)
    if kind == "text":
        return block.text
    if kind == "image":
        return f"[image: {block.mime_type}, {_size(block.data)}; not shown to the model]"
    if kind == "audio":
        return f"[audio: {block.mime_type}, {_size(block.data)}; not shown to the model]"
    if kind == "resource":
        res = block.resource
        if getattr(res, "text", None) is not None:
            return res.text
        return f"[resource {res.uri}: {res.mime_type or 'binary'}, {_size(res.blob)}]"
    if kind == "resource_link":
        return f"[resource link: {block.uri}" + (f" ({block.name})" if block.name else "") + "]"
    return f"[{kind or type(block).__name__} content]"


def truncate(text: str, max_chars: int) -> tuple[str, bool]:
    """Keep the head of a long text and say how much was cut, so the model knows it saw only part."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text, False
    note = f"\n[truncated: showing the first {max_chars:,} of {len(text):,} characters]"
    return text[:max_chars] + note, True


def result_text(content: list[Any], structured: Any, is_error: bool) -> str:
    """All content blocks joined; structured content alone is shown as JSON; an empty result says so."""
    parts = [block_text(b) for b in content or []]
    text = "\n".join(p for p in parts if p)
    if not text and structured is not None:
        text = json.dumps(structured, indent=2, ensure_ascii=False, default=str)
    if not text:
        text = "the tool reported an error without a message" if is_error else "(the tool returned nothing)"
    return text
