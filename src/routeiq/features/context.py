"""Request context: the categorical facts about a request besides its text.

    ctx = gateway_context(tags=("support",), team="t-1", user="u-9", messages=msgs)
    keys = context_keys(ctx, ("team", "tags"))   # ['team=…', 'tags=…'] as 16-hex hashes

A context is a mapping of field name to a string or a list of strings (tags). The gateway
fills :data:`GATEWAY_FIELDS` from the request LiteLLM verified (tags, team, key alias, key
hash, end user, a hash of the system prompt); records and datasets may carry any field, and a
benchmark's ``task`` column is the ``task`` field. Values enter a router only as SHA-256 keys
of ``field=value``, so an artifact holds no team, user or key name, and the key itself is
never a field (its hash or alias only).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

# What the gateway fills from a request (routeiq.serving.engine).
GATEWAY_FIELDS = ("tags", "team", "key_alias", "key", "user", "system")
_FIELD = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_MAX_VALUE = 256
_MAX_VALUES = 64

Context = Mapping[str, Any]


class ContextError(ValueError):
    """A malformed context field name or value."""


def check_fields(fields: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated context field names (lower-case identifiers)."""
    if isinstance(fields, str):
        fields = [f for f in fields.split(",") if f.strip()]
    out: list[str] = []
    for name in fields:
        name = str(name).strip()
        if not _FIELD.fullmatch(name):
            raise ContextError(
                f"context field {name!r} is not a lower-case identifier "
                f"(letters, digits, '_'; the gateway fills {', '.join(GATEWAY_FIELDS)})"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def field_values(value: Any) -> tuple[str, ...]:
    """A field's values as strings: None -> (), a string -> (it,), a list -> its strings."""
    if value is None:
        return ()
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        return (text[:_MAX_VALUE],) if text else ()
    if isinstance(value, list | tuple):
        return tuple(v for item in value[:_MAX_VALUES] for v in field_values(item)[:1])
    raise ContextError(f"a context value must be a string or a list of strings, got {value!r}")


def _key(name: str, value: str) -> str:
    return hashlib.sha256(f"{name}={value}".encode()).hexdigest()[:16]


def context_keys(context: Context | None, fields: Iterable[str]) -> list[str]:
    """The hashed ``field=value`` keys of ``context`` for ``fields`` (missing fields: none)."""
    if not context:
        return []
    return [_key(name, v) for name in fields for v in field_values(context.get(name))]


def system_hash(messages: Any) -> str | None:
    """A stable 16-hex hash of a chat's system prompt (system and developer turns, in
    order); None without one. Identifies the application, never logs its text."""
    if not isinstance(messages, list):
        return None
    parts = []
    for msg in messages:
        if isinstance(msg, Mapping) and msg.get("role") in ("system", "developer"):
            content = msg.get("content")
            if isinstance(content, list):  # content parts: their text
                content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            parts.append(str(content or ""))
    if not parts:
        return None
    data = "\x1e".join(parts).encode()
    h = hashlib.sha256()
    # hashlib drops the GIL for updates over 2,047 bytes, which lets a busy thread keep it for
    # a whole switch interval (bench/gil_contention.py): hash in smaller pieces.
    for start in range(0, len(data), 2000):
        h.update(data[start : start + 2000])
    return h.hexdigest()[:16]


def gateway_context(
    *,
    tags: Iterable[str] = (),
    team: str | None = None,
    key_alias: str | None = None,
    key: str | None = None,
    user: str | None = None,
    messages: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The context of a gateway request (only the fields it has). ``key`` is the key's
    hash as LiteLLM's auth reports it, never the key; ``extra`` holds other fields (a
    gateway field set here wins over one in ``extra``)."""
    ctx: dict[str, Any] = dict(extra or {})
    tag_list = [t for t in tags if isinstance(t, str)][:_MAX_VALUES]
    if tag_list:
        ctx["tags"] = tag_list
    for name, value in (("team", team), ("key_alias", key_alias), ("key", key), ("user", user)):
        if isinstance(value, str) and value:
            ctx[name] = value[:_MAX_VALUE]
    system = system_hash(messages)
    if system is not None:
        ctx["system"] = system
    return ctx


def client_context(value: Any) -> dict[str, Any]:
    """The fields a client may set itself (``metadata.routeiq_context``): valid names other
    than the gateway's own, valid values; anything else is dropped, never an error (a
    request LiteLLM would serve is not refused over its routing hints)."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, Any] = {}
    for name, raw in list(value.items())[:_MAX_VALUES]:
        if not isinstance(name, str) or name in GATEWAY_FIELDS or not _FIELD.fullmatch(name):
            continue
        try:
            values = field_values(raw)
        except ContextError:
            continue
        if values:
            out[name] = list(values) if isinstance(raw, list | tuple) else values[0]
    return out
