"""Redis stream URLs for the decision log: ``redis://[user:password@]host[:port][/db]?...``.

``rediss://`` selects TLS. Query options:

* ``stream``: the stream key (default ``routeiq:decisions``);
* ``maxlen``: trim the stream to about this many entries (``XADD ... MAXLEN ~``; default: no
  trimming);
* ``buffer``: records kept in memory while Redis cannot be written (default 10000); beyond
  that the oldest are dropped and counted (``routeiq_decision_log_dropped_total``);
* redis-py's own connection options (``socket_timeout``, ``socket_connect_timeout``,
  ``health_check_interval``, ...); both timeouts default to 2 s here.

A bad URL is an error at settings validation, naming what is wrong; the password never
appears in messages (:meth:`RedisStreamConfig.display`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_STREAM = "routeiq:decisions"
DEFAULT_BUFFER = 10_000
SCHEMES = ("redis", "rediss")
OPTIONS = ("stream", "maxlen", "buffer")  # RouteIQ's own query options
DEFAULT_TIMEOUT_S = 2.0
USAGE = "redis://host:port/db?stream=NAME&maxlen=N (rediss:// for TLS)"

_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(value: object) -> bool:
    """Whether a ``decision_log`` value is a URL (``scheme://...``) rather than a file path."""
    return isinstance(value, str) and _URL_LIKE.match(value) is not None


class RedisStreamConfig(BaseModel):
    """Where and how to append decision records: a connection URL plus stream options.

    Build from one URL with :meth:`from_url`. ``url`` is the connection URL without RouteIQ's
    options; it may hold a password, so it is kept out of ``repr`` (use :attr:`display`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(repr=False, description="connection URL without RouteIQ's options")
    stream: str = Field(default=DEFAULT_STREAM, min_length=1, description="stream key")
    maxlen: int | None = Field(
        default=None, ge=1, description="approximate stream length cap (none: unbounded)"
    )
    buffer: int = Field(
        default=DEFAULT_BUFFER, ge=1, description="records kept in memory while Redis is down"
    )

    @field_validator("url")
    @classmethod
    def _connection_url(cls, value: str) -> str:
        parts = _split(value)
        names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
        own = sorted(set(names) & set(OPTIONS))
        if own:
            raise ValueError(f"set {', '.join(own)} as fields, not in the connection URL")
        _check_connection(parts, value)
        return value

    @classmethod
    def from_url(cls, url: str) -> RedisStreamConfig:
        """Parse ``redis://host:port/db?stream=NAME&maxlen=N&buffer=N``.

        Raises ValueError with the reason (never echoing a password).
        """
        parts = _split(url)
        _check_location(parts)
        own: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in seen:
                raise ValueError(f"option {name!r} is given twice in the Redis URL")
            seen.add(name)
            if name in OPTIONS:
                own[name] = value
            else:
                rest.append((name, value))
        connection = urlunsplit(parts._replace(query=urlencode(rest)))
        _check_options(_split(connection), connection)
        buffer = _positive_int("buffer", own.get("buffer"))
        try:
            return cls(
                url=connection,
                stream=own.get("stream") or DEFAULT_STREAM,  # missing or blank: the default
                maxlen=_positive_int("maxlen", own.get("maxlen")),
                buffer=DEFAULT_BUFFER if buffer is None else buffer,
            )
        except ValidationError as exc:  # not expected after the checks above; keep it short
            raise ValueError(exc.errors()[0]["msg"]) from None

    @property
    def display(self) -> str:
        """The URL without credentials, and the stream: safe for logs and errors."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        auth = "***@" if parts.username or parts.password else ""
        return f"{parts.scheme}://{auth}{host}{port}{parts.path} stream {self.stream!r}"


def _split(url: str) -> SplitResult:
    if not isinstance(url, str) or not is_url(url):
        raise ValueError(f"not a URL; use {USAGE}")
    try:
        return urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise ValueError(f"malformed Redis URL ({exc}); use {USAGE}") from None


def _check_connection(parts: SplitResult, url: str) -> None:
    _check_location(parts)
    _check_options(parts, url)


def _check_location(parts: SplitResult) -> None:
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"unsupported URL scheme {parts.scheme!r}: decision_log is a file path or {USAGE}"
        )
    if not parts.hostname:
        raise ValueError(f"the Redis URL has no host; use {USAGE}")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port on access)
    except ValueError:
        port = parts.netloc.rsplit("@", 1)[-1]
        raise ValueError(f"the Redis URL has an invalid port in {port!r}; use {USAGE}") from None
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the Redis database must be a number (/0, /1, ...), got {parts.path!r}")
    if parts.fragment:
        raise ValueError("the Redis URL must not have a #fragment")


def _check_options(parts: SplitResult, url: str) -> None:
    try:
        from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url
    except ImportError:
        raise ValueError(
            "a redis:// decision_log needs the redis package: pip install 'routeiq-router[litellm]'"
        ) from None
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name not in URL_QUERY_ARGUMENT_PARSERS:
            known = ", ".join([*OPTIONS, *sorted(URL_QUERY_ARGUMENT_PARSERS)])
            raise ValueError(f"unknown Redis URL option {name!r} (known: {known})")
    parse_url(url)  # redis-py's own checks of option values: "Invalid value for 'x' ..."


def _positive_int(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"Redis URL option {name} must be a whole number >= 1, got {value!r}")
    return int(value)


def client_options() -> dict[str, Any]:
    # URL options override these. The sink retries with its own backoff, so the client
    # makes a single attempt per call.
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return {
        "socket_timeout": DEFAULT_TIMEOUT_S,
        "socket_connect_timeout": DEFAULT_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }
