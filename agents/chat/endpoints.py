"""`EndpointPool`: several OpenAI-compatible servers behind one chat model (scale-out over base URLs).

Each request goes to the server with the fewest requests in flight (ties taken in turn, so an idle pool is
round robin). A server that fails (refused connection, timeout, 5xx, garbage) is benched for a cool-off that
doubles with each consecutive failure, so the retry and the requests after it go to the others; when every
server is benched the one whose bench ends first is tried again. Thread-safe: the BFCL evaluator calls from
worker threads, the survey from one event loop.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Sequence

from agents.errors import AgentError

COOL_OFF_S = 2.0        # first bench; doubles per consecutive failure
MAX_COOL_OFF_S = 60.0


def normalize_base_url(url: str) -> str:
    """`http://host:8000`, `.../v1` and `.../v1/` all mean the same API root, `.../v1`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise AgentError(f"base URL {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
    return url if url.endswith("/v1") else url + "/v1"


def split_base_urls(base_url: str | Sequence[str]) -> list[str]:
    """A comma list, or a list of URLs and comma lists -> normalized API roots, in order, without repeats."""
    parts = [base_url] if isinstance(base_url, str) else list(base_url)
    urls = [normalize_base_url(u) for part in parts for u in part.split(",") if u.strip()]
    if not urls:
        raise AgentError("no base URL given: pass --base-url http://HOST:PORT/v1 (repeat it, or give a comma "
                         "list, for several servers)")
    return list(dict.fromkeys(urls))


@dataclass
class Endpoint:
    url: str
    in_flight: int = 0
    failures: int = 0           # consecutive; reset by a success
    benched_until: float = 0.0  # time.monotonic() before which the server is skipped
    served: int = 0             # requests answered (for the report and the tests)
    last_error: str = ""


class EndpointPool:
    def __init__(self, base_url: str | Sequence[str]):
        self.endpoints = [Endpoint(u) for u in split_base_urls(base_url)]
        self._lock = threading.Lock()
        self._turn = 0

    def __len__(self) -> int:
        return len(self.endpoints)

    def acquire(self) -> Endpoint:
        """The server for the next request (count it in flight until `release`)."""
        now = time.monotonic()
        with self._lock:
            self._turn += 1
            n = len(self.endpoints)
            order = [self.endpoints[(self._turn + i) % n] for i in range(n)]
            ready = [e for e in order if e.benched_until <= now]
            ep = min(ready, key=lambda e: e.in_flight) if ready else min(order, key=lambda e: e.benched_until)
            ep.in_flight += 1
            return ep

    def release(self, ep: Endpoint, error: str | None = None) -> None:
        """Done with `ep`; with `error`, bench it so other requests go elsewhere for a while."""
        with self._lock:
            ep.in_flight -= 1
            if error is None:
                ep.failures, ep.served = 0, ep.served + 1
                return
            ep.failures += 1
            ep.last_error = error
            ep.benched_until = time.monotonic() + min(MAX_COOL_OFF_S, COOL_OFF_S * 2 ** (ep.failures - 1))

    def any_ready(self) -> bool:
        now = time.monotonic()
        return any(e.benched_until <= now for e in self.endpoints)
