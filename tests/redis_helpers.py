"""The machine's Redis for tests (``from redis_helpers import redis_url``)."""

from __future__ import annotations

import socket

import pytest


def redis_url() -> str:
    """redis://127.0.0.1:6379/0, or skip the test with the reason when it does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return "redis://127.0.0.1:6379/0"
    except OSError:
        pytest.skip("Redis is not answering on 127.0.0.1:6379")
