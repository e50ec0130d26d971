"""Secrets kept out of everything cpm shows: values that came from `${ENV}` in the MCP config, and token-looking
values in URL queries, become `***` in listings (`cpm mcp servers`, table and --json), error messages, logs and
chat transcripts. The server itself still gets the real values; only what is printed or recorded changes."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
MIN_SECRET_CHARS = 4  # shorter substitutions ("1", "on") would blank out unrelated text and hide nothing
# query keys that carry credentials, in the spellings APIs use (token, api_key, apiKey, access-token, sig, ...)
_SECRET_KEY = r"(?:[a-z0-9_\-]*(?:token|key|secret|password|passwd|pwd|auth|credential|signature|session|jwt)" \
              r"[a-z0-9_\-]*|sig|code)"
_QUERY_SECRET = re.compile(rf"([?&;]{_SECRET_KEY}=)[^&#\s'\"]+", re.IGNORECASE)
# a long opaque value in any query parameter (JWTs, bearer tokens) is a token whatever its key is called
_QUERY_OPAQUE = re.compile(r"([?&;][^=&#\s]+=)(?=[^&#\s'\"]*\d)(?=[^&#\s'\"]*[A-Za-z])[A-Za-z0-9._~+/\-]{20,}={0,2}")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret and every token-looking URL query value replaced by `***`."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
    return _QUERY_OPAQUE.sub(rf"\1{MASK}", text)


class RedactingFilter(logging.Filter):
    """Rewrites log records of the HTTP client and the MCP SDK (which log request URLs) through `redact`, with
    the secrets of every server connected so far."""

    secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactingFilter()
LOGGERS = ("httpx", "httpx2", "httpcore", "mcp")


def guard_logs(secrets: Iterable[str]) -> None:
    """Make sure the loggers that print URLs redact these secrets (and URL tokens) from now on. A logger's
    filters do not apply to its children's records, so every existing child logger gets the filter too (call
    this after the client modules are imported)."""
    RedactingFilter.secrets.update(secrets)
    names = [n for n in list(logging.root.manager.loggerDict)
             if any(n == p or n.startswith(p + ".") for p in LOGGERS)]
    for name in set(names) | set(LOGGERS):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
