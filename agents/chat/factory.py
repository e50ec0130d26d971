"""`make_chat_model`: the one place that picks a backend from options and the environment.

Environment (read here, at startup, never inside graph nodes): CPM_BACKEND (engine|openai), CPM_BASE_URL,
CPM_API_KEY, CPM_MODEL, CPM_TIMEOUT (seconds per request to a server, default 120). Explicit arguments win over the environment; a base URL alone implies "openai".
Several servers: `--base-url` repeated, or a comma list (also in CPM_BASE_URL); the requests are spread over them.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from agents.errors import AgentError

DEFAULT_MODEL = "smollm2-135m"
BACKENDS = ("engine", "openai")


def make_chat_model(backend: str | None = None, model: str | None = None, base_url: str | None = None,
                    api_key: str | None = None, **kwargs: Any):
    """A `ChatEngine` (in-process) or `ChatOpenAICompatible` (HTTP); extra kwargs go to the model class."""
    backend, model, base_url = resolve_backend(backend, model, base_url)
    if backend == "engine":
        from agents.chat.engine_chat import ChatEngine

        return ChatEngine.from_model(model, **kwargs)
    if not base_url:
        raise AgentError("the openai backend needs a server URL: pass --base-url http://HOST:PORT/v1 "
                         "or set CPM_BASE_URL")
    from agents.chat.openai_chat import ChatOpenAICompatible

    api_key = api_key or os.environ.get("CPM_API_KEY") or None
    if os.environ.get("CPM_TIMEOUT") and "timeout" not in kwargs:  # seconds per request, for slow or loaded servers
        kwargs["timeout"] = _seconds(os.environ["CPM_TIMEOUT"])
    chat = ChatOpenAICompatible(base_url=base_url, model=model or "default", api_key=api_key, **kwargs)
    if model is None:  # servers such as vLLM insist on their model name: ask which one they serve
        served = chat.list_models()
        if not served:
            raise AgentError(f"{base_url} lists no models; pass --model NAME")
        chat = ChatOpenAICompatible(base_url=base_url, model=served[0], api_key=api_key, **kwargs)
    return chat


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise AgentError(f"CPM_TIMEOUT must be a positive number of seconds, got {value!r}")
    return seconds


def resolve_backend(backend: str | None, model: str | None, base_url: str | None
                    ) -> tuple[str, str | None, str | None]:
    """(backend, model, base_url) after the environment and the defaults, without loading anything. The model
    stays None only for a server that is asked which model it serves."""
    base_url = base_url or os.environ.get("CPM_BASE_URL") or None
    backend = (backend or os.environ.get("CPM_BACKEND") or ("openai" if base_url else "engine")).lower()
    model = model or os.environ.get("CPM_MODEL") or None
    if backend not in BACKENDS:
        raise AgentError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)} (--backend or CPM_BACKEND)")
    return backend, (model or DEFAULT_MODEL) if backend == "engine" else model, base_url


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The --backend/--base-url/--model/--api-key options every model-using command shares."""
    g = parser.add_argument_group("model backend")
    g.add_argument("--backend", choices=BACKENDS, default=None,
                   help="engine (in-process, default) or openai (an OpenAI-compatible server); env CPM_BACKEND")
    g.add_argument("--base-url", default=None, action=BaseUrlAction,
                   help="server URL for --backend openai, e.g. http://127.0.0.1:8000/v1; repeat it (or give a "
                   "comma list) to spread the requests over several servers; env CPM_BASE_URL")
    g.add_argument("--model", default=None, help=f"model alias/path (engine, default {DEFAULT_MODEL}) or the "
                   "server's model name; env CPM_MODEL")
    g.add_argument("--api-key", default=None, help="API key for the server; env CPM_API_KEY")


class BaseUrlAction(argparse.Action):
    """`--base-url A --base-url B` -> "A,B": several servers stay one string option for every caller."""

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{previous},{values}" if previous else values)


def chat_model_from_args(args: argparse.Namespace, **kwargs: Any):
    """Build the chat model from the options added by `add_backend_arguments`."""
    return make_chat_model(backend=args.backend, model=args.model, base_url=args.base_url, api_key=args.api_key,
                           **kwargs)
