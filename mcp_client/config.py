"""Reads the de-facto MCP server config: `{"mcpServers": {name: {command, args, env, cwd} | {url, headers}}}`.

The same file works in Claude Desktop, oterm and mcphost, so we accept their spellings of the transport
(`type`/`transport`: stdio, http, streamable-http, streamableHttp) and their `disabled` flag. `${VAR}` and
`${VAR:-default}` are expanded in every string from the environment once, at load time; the values that came
from the environment are remembered (`secrets`) so that everything shown of a server redacts them.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_client.errors import MCPError
from mcp_client.redact import redact

DEFAULT_CALL_TIMEOUT = 60.0
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_STDIO_TYPES = {"stdio"}
_HTTP_TYPES = {"http", "streamable-http", "streamable_http", "streamablehttp"}


@dataclass(frozen=True, repr=False)
class StdioServer:
    """A server we start as a subprocess and talk to over its stdin/stdout."""

    name: str
    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float = DEFAULT_CALL_TIMEOUT
    secrets: tuple[str, ...] = field(default=(), compare=False)  # values that came from ${ENV}

    @property
    def where(self) -> str:
        """The command line as shown to people: secrets redacted."""
        return redact(" ".join([self.command, *self.args]), self.secrets)

    def __repr__(self) -> str:
        return f"StdioServer({self.name!r}, {self.where!r})"


@dataclass(frozen=True, repr=False)
class HttpServer:
    """A server already running somewhere, reached over streamable HTTP."""

    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_CALL_TIMEOUT
    secrets: tuple[str, ...] = field(default=(), compare=False)

    @property
    def where(self) -> str:
        """The URL as shown to people: secrets and token-looking query values redacted."""
        return redact(self.url, self.secrets)

    def __repr__(self) -> str:
        return f"HttpServer({self.name!r}, {self.where!r})"


ServerConfig = StdioServer | HttpServer


Scalar = str | int | float | bool  # written as a string where the server needs one (an env value, an arg)


class ServerEntry(BaseModel):
    """The types of one `mcpServers` entry; which keys go together (command xor url) is checked after it."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")
    command: Annotated[str, Field(min_length=1)] | None = None
    args: list[Scalar] | None = None
    env: dict[str, Scalar] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, Scalar] | None = None
    timeout: Annotated[float, Field(gt=0)] = DEFAULT_CALL_TIMEOUT
    type: str | None = None
    transport: str | None = None
    disabled: bool = False


_TYPE_HINTS = {"args": "a list of strings", "env": "an object of strings", "headers": "an object of strings",
               "timeout": "a positive number of seconds", "command": "a non-empty string", "url": "a string",
               "cwd": "a string", "type": "a string", "transport": "a string", "disabled": "true or false"}


def _check_types(raw: dict, where: str) -> None:
    try:
        ServerEntry.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = str(err["loc"][0])
        inner = ".".join(str(p) for p in err["loc"][1:] if not str(p).startswith(("str", "int", "float", "bool")))
        raise MCPError(f"{where}: '{key}' must be {_TYPE_HINTS.get(key, 'valid')}"
                       f"{f' (at {inner})' if inner else ''}, got {str(repr(err['input']))[:60]}") from None


def expand_env(value: str, env: dict[str, str] | None = None, *, where: str = "config",
               found: set[str] | None = None) -> str:
    """Replace `${VAR}` / `${VAR:-default}` with values from `env` (default: os.environ); the values taken
    from `env` are added to `found`.

    An unset variable without a default is the user's mistake, so it names the variable and the place.
    """
    env = os.environ if env is None else env

    def sub(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            if found is not None:
                found.add(env[name])
            return env[name]
        if default is not None:
            return default
        raise MCPError(f"{where}: environment variable {name} is not set (export it or write ${{{name}:-default}})")

    return _ENV_REF.sub(sub, value)


def _expand(value: Any, env: dict[str, str] | None, where: str, found: set[str]) -> Any:
    if isinstance(value, str):
        return expand_env(value, env, where=where, found=found)
    if isinstance(value, list):
        return [_expand(v, env, where, found) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env, where, found) for k, v in value.items()}
    return value


def _str_map(raw: Any, key: str, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MCPError(f"{where}: '{key}' must be an object of strings, got {type(raw).__name__}")
    return {str(k): str(v) for k, v in raw.items()}


def _timeout(raw: dict, where: str) -> float:
    value = raw.get("timeout", DEFAULT_CALL_TIMEOUT)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise MCPError(f"{where}: 'timeout' must be a positive number of seconds, got {value!r}")
    return float(value)


def parse_server(name: str, raw: Any, *, base_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> ServerConfig:
    """One entry of `mcpServers` -> StdioServer or HttpServer, or MCPError saying what is wrong."""
    where = f"mcpServers.{name}"
    if not name or "." in name or not name.strip() == name:
        # Tools are named `server.tool`, so a dot in a server name would make names ambiguous.
        raise MCPError(f"{where}: server names must be non-empty, without dots or surrounding spaces")
    if not isinstance(raw, dict):
        raise MCPError(f"{where}: expected an object with 'command' or 'url', got {type(raw).__name__}")
    found: set[str] = set()
    raw = _expand(raw, env, where, found)
    try:
        return _server(name, raw, where, base_dir, tuple(sorted(found)))
    except MCPError as exc:  # a message quoting a bad value must not quote a secret in it
        raise MCPError(redact(str(exc), found)) from None


def _server(name: str, raw: dict, where: str, base_dir: Path | None, secrets: tuple[str, ...]) -> ServerConfig:
    _check_types(raw, where)
    kind = str(raw.get("type") or raw.get("transport") or "").lower()
    if kind == "sse":
        raise MCPError(f"{where}: the legacy SSE transport is not supported; point 'url' at the server's "
                       "streamable HTTP endpoint (usually /mcp)")
    if kind and kind not in _STDIO_TYPES | _HTTP_TYPES:
        raise MCPError(f"{where}: unknown transport type {kind!r}; use 'stdio' or 'http'")
    if "url" in raw and "command" in raw:
        raise MCPError(f"{where}: give either 'command' (stdio) or 'url' (HTTP), not both")
    if "url" in raw or kind in _HTTP_TYPES:
        url = raw.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise MCPError(f"{where}: 'url' must be an http:// or https:// address, got {url!r}")
        return HttpServer(name, url, _str_map(raw.get("headers"), "headers", where), _timeout(raw, where), secrets)
    command = raw.get("command")
    if not isinstance(command, str) or not command:
        raise MCPError(f"{where}: missing 'command' (for a subprocess server) or 'url' (for an HTTP server)")
    args = raw.get("args") or []
    if not isinstance(args, list):
        raise MCPError(f"{where}: 'args' must be a list of strings, got {type(args).__name__}")
    cwd = raw.get("cwd")
    if cwd is not None:
        # A relative cwd means "beside the config file", which is what a user who moves the file expects.
        cwd_path = Path(str(cwd)).expanduser()
        if base_dir is not None and not cwd_path.is_absolute():
            cwd_path = base_dir / cwd_path
        if not cwd_path.is_dir():
            raise MCPError(f"{where}: 'cwd' {cwd_path} is not a directory")
        cwd = str(cwd_path)
    return StdioServer(name, command, [str(a) for a in args], _str_map(raw.get("env"), "env", where), cwd,
                       _timeout(raw, where), secrets)


def parse_config(data: Any, *, base_dir: Path | None = None,
                 env: dict[str, str] | None = None) -> dict[str, ServerConfig]:
    """The whole `{"mcpServers": {...}}` object -> {name: ServerConfig}; disabled servers are left out."""
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers"), dict):
        raise MCPError('MCP config must be a JSON object with an "mcpServers" object, '
                       'e.g. {"mcpServers": {"time": {"command": "mcp-server-time"}}}')
    servers = {}
    for name, raw in data["mcpServers"].items():
        if isinstance(raw, dict) and raw.get("disabled") is True:
            continue
        servers[name] = parse_server(name, raw, base_dir=base_dir, env=env)
    return servers


def load_config(path: str | os.PathLike, *, env: dict[str, str] | None = None) -> dict[str, ServerConfig]:
    """Read a config file; a missing file or bad JSON is reported with the path and the line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MCPError(f"MCP config {path} not found (pass --mcp FILE with an mcpServers JSON file)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MCPError(f"MCP config {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    return parse_config(data, base_dir=path.resolve().parent, env=env)


def find_config(explicit: str | os.PathLike | None = None) -> Path | None:
    """Where the MCP config is: `--mcp FILE`, else $CPM_MCP_CONFIG, else ~/.config/cpm/mcp.json if present."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("CPM_MCP_CONFIG"):
        return Path(os.environ["CPM_MCP_CONFIG"]).expanduser()
    default = Path("~/.config/cpm/mcp.json").expanduser()
    return default if default.is_file() else None
