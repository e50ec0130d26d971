"""Tokenizer + chat template: transformers' own loaders, so `apply_chat_template` behaves exactly as HF's."""
from __future__ import annotations

from pathlib import Path

from engine.errors import EngineError

# Any one of these lets transformers build a tokenizer for a checkpoint folder.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def load_tokenizer(path: Path):
    """A transformers tokenizer for a checkpoint folder (tokenizer.json / tokenizer_config.json) or a .gguf
    file (vocabulary, merges, special ids and chat template read from its metadata by transformers)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise EngineError(f"{path}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); copy the model's "
                          "tokenizer files into the folder")
    try:
        if path.is_file():
            # PreTrainedTokenizerFast reads only the tokenizer keys; AutoTokenizer would first parse the whole
            # file into a config with gguf.GGUFReader, which costs ~10 s for a 49k vocabulary
            try:
                return PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name)
            except ValueError:
                # transformers builds GGUF tokenizers only for the architectures it maps (not llama.cpp's
                # `minicpm`, e.g. BitCPM4 GGUFs): an HF tokenizer saved beside the file serves instead
                if not (path.parent / "tokenizer.json").exists():
                    raise
                return AutoTokenizer.from_pretrained(str(path.parent))
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - transformers parsing the user's file: any failure is a bad file
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise EngineError(f"{path}: cannot build a tokenizer ({first.strip()[:200]})") from None
