"""HTTP for OpenAI-compatible servers: JSON posts and SSE streams over one or several servers, bounded retries,
errors that name the server and say what to do.

Several base URLs form an `EndpointPool` (agents/chat/endpoints.py): each request goes to the least busy
server, and a failed try is retried on another one at once (on the same one after a backoff when it is alone).
Retried: connection failures, timeouts, 408/409/429, any 5xx and answers that are not JSON (the server may be
starting, overloaded, dying or broken). Not retried: other 4xx (the request itself is wrong; retrying cannot
help), nor a stream that already produced events (its output was already handed to the caller: the server is
benched and the error names it, so the caller's own retry goes elsewhere).
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator, Callable, Iterator, Sequence

import httpx

from agents.chat.endpoints import Endpoint, EndpointPool, normalize_base_url
from agents.errors import AgentError

__all__ = ["BackendError", "Transport", "normalize_base_url", "RETRY_STATUS"]

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
Check = Callable[[dict, str], None]  # validates a parsed answer from the server at that URL; raises BackendError


class BackendError(AgentError):
    """An OpenAI-compatible backend refused or failed a request; `status` is the HTTP status when there was one.
    `retryable`: another try (on this or another server) may succeed."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class Transport:
    """Sync and async requests to one or more API roots with shared retry and error handling."""

    def __init__(self, base_url: str | Sequence[str], api_key: str | None = None, timeout: float = 120.0,
                 max_retries: int = 2, backoff_s: float = 0.5):
        self.pool = EndpointPool(base_url)
        self.base_url = ", ".join(e.url for e in self.pool.endpoints)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.timeout_s = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # every server gets at least one try, plus the retries
        self.attempts = max_retries + len(self.pool)

    # ---- sync ------------------------------------------------------------------------------------------
    def request_json(self, method: str, path: str, body: dict | None = None, check: Check | None = None) -> dict:
        failures: list[BackendError] = []
        for attempt in range(self.attempts):
            ep = self.pool.acquire()
            try:
                with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
                    resp = client.request(method, ep.url + path, json=body)
                data = self._json_or_raise(resp, ep.url)
                if check:
                    check(data, ep.url)
            except (httpx.TransportError, BackendError) as exc:
                failure = self._failed(ep, exc, failures)
            except BaseException:  # cancelled, or the caller stopped reading the stream
                self.pool.release(ep)
                raise
            else:
                self.pool.release(ep)
                return data
            if attempt + 1 < self.attempts:
                time.sleep(self._delay(attempt, failure))
        raise self._exhausted(failures)

    def stream_events(self, path: str, body: dict) -> Iterator[dict]:
        failures: list[BackendError] = []
        for attempt in range(self.attempts):
            ep = self.pool.acquire()
            started = False
            try:
                with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
                    with client.stream("POST", ep.url + path, json=body) as resp:
                        if resp.status_code >= 400:
                            resp.read()
                            self._json_or_raise(resp, ep.url)
                        for line in resp.iter_lines():
                            event = self._event(line, ep.url)
                            if event is _DONE:
                                break
                            if event is not None:
                                started = True
                                yield event
            except (httpx.TransportError, BackendError) as exc:
                failure = self._failed(ep, exc, failures, started)
            except BaseException:  # cancelled, or the caller stopped reading the stream
                self.pool.release(ep)
                raise
            else:
                self.pool.release(ep)
                return
            if attempt + 1 < self.attempts:
                time.sleep(self._delay(attempt, failure))
        raise self._exhausted(failures)

    # ---- async -----------------------------------------------------------------------------------------
    async def arequest_json(self, method: str, path: str, body: dict | None = None,
                            check: Check | None = None) -> dict:
        failures: list[BackendError] = []
        for attempt in range(self.attempts):
            ep = self.pool.acquire()
            try:
                async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:
                    resp = await client.request(method, ep.url + path, json=body)
                data = self._json_or_raise(resp, ep.url)
                if check:
                    check(data, ep.url)
            except (httpx.TransportError, BackendError) as exc:
                failure = self._failed(ep, exc, failures)
            except BaseException:  # cancelled, or the caller stopped reading the stream
                self.pool.release(ep)
                raise
            else:
                self.pool.release(ep)
                return data
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self._delay(attempt, failure))
        raise self._exhausted(failures)

    async def astream_events(self, path: str, body: dict) -> AsyncIterator[dict]:
        failures: list[BackendError] = []
        for attempt in range(self.attempts):
            ep = self.pool.acquire()
            started = False
            try:
                async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:
                    async with client.stream("POST", ep.url + path, json=body) as resp:
                        if resp.status_code >= 400:
                            await resp.aread()
                            self._json_or_raise(resp, ep.url)
                        async for line in resp.aiter_lines():
                            event = self._event(line, ep.url)
                            if event is _DONE:
                                break
                            if event is not None:
                                started = True
                                yield event
            except (httpx.TransportError, BackendError) as exc:
                failure = self._failed(ep, exc, failures, started)
            except BaseException:  # cancelled, or the caller stopped reading the stream
                self.pool.release(ep)
                raise
            else:
                self.pool.release(ep)
                return
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self._delay(attempt, failure))
        raise self._exhausted(failures)

    # ---- shared ----------------------------------------------------------------------------------------
    def _failed(self, ep: Endpoint, exc: Exception, failures: list[BackendError], started: bool = False
                ) -> BackendError:
        """Book a failed try on `ep`; re-raise what must not be retried, else return the failure."""
        err = self._transport_error(exc, ep.url) if isinstance(exc, httpx.TransportError) else exc
        if not err.retryable:  # the request itself was refused: the server is fine, the request is not
            self.pool.release(ep)
            raise err
        self.pool.release(ep, str(err))
        if started:  # tokens already reached the caller: a retry would repeat them, so the caller decides
            raise BackendError(f"{ep.url} failed mid-stream: {err}", err.status) from exc
        failures.append(err)
        return err

    def _delay(self, attempt: int, failure: BackendError) -> float:
        if self.pool.any_ready():  # another server can take the retry now
            return 0.0
        if failure.retry_after is not None:
            return min(failure.retry_after, 30.0)
        return self.backoff_s * (2 ** attempt)

    def _exhausted(self, failures: list[BackendError]) -> BackendError:
        last = failures[-1]
        if len(self.pool) == 1:
            return last
        servers = {e.url: e.last_error for e in self.pool.endpoints if e.last_error}
        detail = "; ".join(f"[{url}] {why}" for url, why in servers.items())
        return BackendError(f"all {len(self.pool)} servers failed ({len(failures)} tries): {detail}", last.status)

    def _event(self, line: str, url: str):
        """One SSE line -> an event dict, _DONE, or None (comments, blank lines, other fields)."""
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            return _DONE
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise BackendError(f"{url} sent a stream event that is not JSON: {data[:200]!r}",
                               retryable=True) from exc
        if isinstance(event, dict) and "error" in event:
            raise BackendError(f"{url} failed mid-stream: {_error_message(event)}", retryable=True)
        return event

    def _json_or_raise(self, resp: httpx.Response, url: str) -> dict:
        if resp.status_code < 400:
            try:
                return resp.json()
            except json.JSONDecodeError as exc:
                raise BackendError(f"{url} answered HTTP {resp.status_code} with non-JSON: "
                                   f"{resp.text[:200]!r}", resp.status_code, retryable=True) from exc
        try:
            detail = _error_message(resp.json())
        except json.JSONDecodeError:
            detail = " ".join(resp.text[:300].split()) or resp.reason_phrase  # one line, even for an HTML page
        hint = _HINTS.get(resp.status_code, "")
        kind = "rejected the request" if resp.status_code < 500 else "failed"
        raise BackendError(f"{url} {kind} (HTTP {resp.status_code}): {detail}{hint}", resp.status_code,
                           retryable=resp.status_code in RETRY_STATUS or resp.status_code >= 500, retry_after=_retry_after(resp))

    def _transport_error(self, exc: httpx.TransportError, url: str) -> BackendError:
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(f"{url} did not answer within {self.timeout_s:g}s (after {self.attempts} tries); "
                                "raise the timeout or check the server", retryable=True)
        if isinstance(exc, httpx.ConnectError):
            return BackendError(f"cannot connect to {url}: {exc or 'connection refused'}; is the server "
                                "running? (start one with `cpm serve --model smollm2-135m`)", retryable=True)
        return BackendError(f"connection to {url} failed: {type(exc).__name__}: {exc}", retryable=True)


_DONE = object()
_HINTS = {
    401: " (check the API key: --api-key or CPM_API_KEY)",
    403: " (the API key is not allowed to do this)",
    404: " (check the base URL, which should end in /v1, and the model name)",
    429: " (the server is rate-limiting; retries were exhausted)",
}


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    return float(value) if value and value.replace(".", "", 1).isdigit() else None


def _error_message(payload) -> str:
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if payload.get("detail"):
            return str(payload["detail"])
        return str(err)
    return str(payload)
