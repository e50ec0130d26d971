"""Fixtures for the chat-layer tests: the real tokenizer, the real engine and a real `cpm serve`, once each."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def chat_tokenizer(smollm2_path):
    """SmolLM2's tokenizer read from the GGUF file (no engine needed)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
