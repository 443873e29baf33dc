"""The service's bearer token: read once, compared in constant time, never logged."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

DEFAULT_TOKEN_ENV = "ROUTEIQ_SERVICE_TOKEN"
_MIN_LENGTH = 16


class TokenError(ValueError):
    """No usable token (missing, empty, too short); the message never holds the token."""


def read_token(env: str = DEFAULT_TOKEN_ENV, token_file: Path | None = None) -> str:
    """The token from ``token_file`` if given, else from the environment variable ``env``.

    >>> os.environ["T"] = "s3cret-s3cret-s3cret"; read_token("T")
    's3cret-s3cret-s3cret'
    """
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenError(f"cannot read token file {token_file}: {exc.strerror}") from None
        where = f"token file {token_file}"
    else:
        token = os.environ.get(env, "").strip()
        where = f"environment variable {env}"
    if not token:
        raise TokenError(f"no service token: {where} is empty or unset")
    if len(token) < _MIN_LENGTH:
        raise TokenError(f"service token in {where} is shorter than {_MIN_LENGTH} characters")
    return token


class BearerCheck:
    """``Authorization: Bearer <token>`` checked in constant time."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def __repr__(self) -> str:  # never the token
        return "BearerCheck(<redacted>)"

    def ok(self, header: str | None) -> bool:
        given = (header or "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self._expected)

    def ok_raw(self, header: bytes | None) -> bool:
        """:meth:`ok` on the header's raw bytes (ASGI headers are latin-1 bytes)."""
        return hmac.compare_digest(header or b"", self._expected)
