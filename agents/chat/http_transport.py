"""HTTP for OpenAI-compatible servers: JSON posts and SSE streams, retries with backoff, errors that say what to do.

Retried: connection failures, timeouts, 408/409/429 and 5xx (the server may be starting or overloaded).
Not retried: other 4xx (the request itself is wrong; retrying cannot help), nor a stream that already
produced events (its output was already handed to the caller).
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import AsyncIterator, Iterator

import httpx

from agents.errors import AgentError

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class BackendError(AgentError):
    """An OpenAI-compatible backend refused or failed a request; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def normalize_base_url(url: str) -> str:
    """`http://host:8000`, `.../v1` and `.../v1/` all mean the same API root, `.../v1`."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise AgentError(f"base URL {url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
    return url if url.endswith("/v1") else url + "/v1"


class Transport:
    """Sync and async requests to one API root with shared retry and error handling."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0, max_retries: int = 2,
                 backoff_s: float = 0.5):
        self.base_url = normalize_base_url(base_url)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.timeout_s = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    # ---- sync ------------------------------------------------------------------------------------------
    def request_json(self, method: str, path: str, body: dict | None = None) -> dict:
        for attempt in range(self.max_retries + 1):
            try:
                with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
                    resp = client.request(method, self.base_url + path, json=body)
                if resp.status_code in RETRY_STATUS and attempt < self.max_retries:
                    time.sleep(self._delay(attempt, resp))
                    continue
                return self._json_or_raise(resp)
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise self._transport_error(exc) from exc
                time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    def stream_events(self, path: str, body: dict) -> Iterator[dict]:
        for attempt in range(self.max_retries + 1):
            started = False
            try:
                with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
                    with client.stream("POST", self.base_url + path, json=body) as resp:
                        if resp.status_code in RETRY_STATUS and attempt < self.max_retries:
                            resp.read()
                            time.sleep(self._delay(attempt, resp))
                            continue
                        if resp.status_code >= 400:
                            resp.read()
                            self._json_or_raise(resp)
                        for line in resp.iter_lines():
                            event = self._event(line)
                            if event is _DONE:
                                return
                            if event is not None:
                                started = True
                                yield event
                        return
            except httpx.TransportError as exc:
                if started or attempt >= self.max_retries:
                    raise self._transport_error(exc) from exc
                time.sleep(self._delay(attempt))

    # ---- async -----------------------------------------------------------------------------------------
    async def arequest_json(self, method: str, path: str, body: dict | None = None) -> dict:
        for attempt in range(self.max_retries + 1):
            try:
                async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:
                    resp = await client.request(method, self.base_url + path, json=body)
                if resp.status_code in RETRY_STATUS and attempt < self.max_retries:
                    await asyncio.sleep(self._delay(attempt, resp))
                    continue
                return self._json_or_raise(resp)
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise self._transport_error(exc) from exc
                await asyncio.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    async def astream_events(self, path: str, body: dict) -> AsyncIterator[dict]:
        for attempt in range(self.max_retries + 1):
            started = False
            try:
                async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:
                    async with client.stream("POST", self.base_url + path, json=body) as resp:
                        if resp.status_code in RETRY_STATUS and attempt < self.max_retries:
                            await resp.aread()
                            await asyncio.sleep(self._delay(attempt, resp))
                            continue
                        if resp.status_code >= 400:
                            await resp.aread()
                            self._json_or_raise(resp)
                        async for line in resp.aiter_lines():
                            event = self._event(line)
                            if event is _DONE:
                                return
                            if event is not None:
                                started = True
                                yield event
                        return
            except httpx.TransportError as exc:
                if started or attempt >= self.max_retries:
                    raise self._transport_error(exc) from exc
                await asyncio.sleep(self._delay(attempt))

    # ---- shared ----------------------------------------------------------------------------------------
    def _delay(self, attempt: int, resp: httpx.Response | None = None) -> float:
        retry_after = resp.headers.get("retry-after") if resp is not None else None
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), 30.0)
        return self.backoff_s * (2 ** attempt)

    def _event(self, line: str):
        """One SSE line -> an event dict, _DONE, or None (comments, blank lines, other fields)."""
        if not line.startswith("data:"):
            return None
        data = line[5:].strip()
        if data == "[DONE]":
            return _DONE
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise BackendError(f"{self.base_url} sent a stream event that is not JSON: {data[:200]!r}") from exc
        if isinstance(event, dict) and "error" in event:
            raise BackendError(f"{self.base_url} failed mid-stream: {_error_message(event)}")
        return event

    def _json_or_raise(self, resp: httpx.Response) -> dict:
        if resp.status_code < 400:
            try:
                return resp.json()
            except json.JSONDecodeError as exc:
                raise BackendError(f"{self.base_url} answered HTTP {resp.status_code} with non-JSON: "
                                   f"{resp.text[:200]!r}", resp.status_code) from exc
        try:
            detail = _error_message(resp.json())
        except json.JSONDecodeError:
            detail = resp.text[:300] or resp.reason_phrase
        hint = _HINTS.get(resp.status_code, "")
        kind = "rejected the request" if resp.status_code < 500 else "failed"
        raise BackendError(f"{self.base_url} {kind} (HTTP {resp.status_code}): {detail}{hint}", resp.status_code)

    def _transport_error(self, exc: httpx.TransportError) -> BackendError:
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(f"{self.base_url} did not answer within {self.timeout_s:g}s "
                                f"(after {self.max_retries + 1} tries); raise the timeout or check the server")
        if isinstance(exc, httpx.ConnectError):
            return BackendError(f"cannot connect to {self.base_url}: {exc or 'connection refused'}; is the server "
                                "running? (start one with `cpm serve --model smollm2-135m`)")
        return BackendError(f"connection to {self.base_url} failed: {type(exc).__name__}: {exc}")


_DONE = object()
_HINTS = {
    401: " (check the API key: --api-key or CPM_API_KEY)",
    403: " (the API key is not allowed to do this)",
    404: " (check the base URL, which should end in /v1, and the model name)",
    429: " (the server is rate-limiting; retries were exhausted)",
}


def _error_message(payload) -> str:
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if payload.get("detail"):
            return str(payload["detail"])
        return str(err)
    return str(payload)
