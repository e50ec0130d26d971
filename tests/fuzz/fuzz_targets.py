"""The fuzzed entry points, each wrapped so that the property is one call: bytes or JSON in, the module's own
error type (or success) out. Shared by the hypothesis tests and the atheris harness (atheris_run.py)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from engine.config import ModelConfig
from engine.errors import EngineError
from engine.gguf_file import GGUFFile
from tui.serve_requests import ChatCompletionBody, CompletionBody, EmbeddingBody, RequestError, parse_body, validate

_TMP = Path(tempfile.mkdtemp(prefix="cpm-fuzz-"))


def gguf(raw: bytes) -> None:
    """Header parser and hyperparameter check of a GGUF image; EngineError (GGUFError) is the only refusal."""
    path = _TMP / "x.gguf"
    path.write_bytes(raw)
    try:
        f = GGUFFile(path)
        ModelConfig.from_gguf(f.metadata, set(f.tensors), str(path))
    except EngineError:
        pass


def hf_config(raw: bytes) -> None:
    """config.json reader, from the file's bytes; EngineError is the only refusal."""
    folder = _TMP / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_bytes(raw)
    try:
        ModelConfig.from_hf_dir(folder)
    except EngineError:
        pass


def hf_config_dict(raw) -> None:
    try:
        ModelConfig.from_hf(raw, "config.json")
    except EngineError:
        pass


def request_bytes(raw: bytes) -> None:
    """A request body as the server reads it, through each endpoint's model; RequestError is the only refusal."""
    try:
        body = parse_body(raw)
    except RequestError:
        return
    request_json(body)


def request_json(body: dict) -> None:
    for model in (ChatCompletionBody, CompletionBody, EmbeddingBody):
        try:
            checked = validate(model, body)
            if isinstance(checked, ChatCompletionBody):
                checked.check_tool_choice()
                checked.budget(), checked.sampling(), checked.stop_list()
                [m.as_openai() for m in checked.messages]
        except RequestError:
            pass


def as_json_bytes(value) -> bytes:
    return json.dumps(value).encode()


def fuzz_settings(examples: int = 150):
    """A fixed seed and a modest example count in `make test`; CPM_FUZZ_EXAMPLES=N for a long run
    (docs/reliability.md records one). Every input has a wall-clock deadline: bounded time is part of the
    property. Applied per test, so other folders' hypothesis settings are untouched."""
    import os

    from hypothesis import HealthCheck, settings

    return settings(max_examples=int(os.environ.get("CPM_FUZZ_EXAMPLES", examples)), derandomize=True,
                    deadline=3000, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
