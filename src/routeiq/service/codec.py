"""JSON for the decision path, both ends: ``orjson`` when it is installed (LiteLLM's proxy
brings it), else the standard library; the same values either way.

* :func:`loads`: bytes -> value. orjson, like the service's own parser, rejects ``NaN``.
* :func:`dumps_decision`: :meth:`Decision.to_dict` -> bytes, about 10x faster than ``json``
  with orjson. orjson writes the same shortest round-trip floats, but a non-finite float as
  ``null``: the one float of the dict not made JSON-safe by ``to_dict`` (each row's
  ``probability``, which ``propensity`` copies) is checked, and a non-finite one still
  raises ValueError as ``json.dumps(allow_nan=False)`` did.

* :func:`dumps_route_body`: the client's ``POST /v1/route`` body -> bytes. orjson only when
  nothing in it could be a non-finite float (the candidates' numbers are checked, no
  override), so a ``NaN`` cost still goes out as ``NaN`` and gets the service's 422, never a
  silent ``null``; anything orjson refuses (a lone surrogate, a huge int) goes to ``json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional
    orjson = None  # type: ignore[assignment]

_COMPACT = (",", ":")


def loads(raw: bytes) -> Any:
    """Parse ``raw``; ValueError when it is not JSON (``orjson.JSONDecodeError`` is one)."""
    if orjson is not None:
        return orjson.loads(raw)
    return json.loads(raw)


def dumps_decision(data: dict[str, Any]) -> bytes:
    """Compact JSON of ``Decision.to_dict()``; ValueError for a non-finite probability."""
    if orjson is not None and all(
        math.isfinite(row["probability"]) for row in data.get("candidates") or ()
    ):
        try:
            return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # a type orjson does not know: the standard library decides
            pass
    return json.dumps(data, separators=_COMPACT, allow_nan=False).encode()


def dumps_route_body(body: Mapping[str, Any]) -> bytes:
    """Compact JSON of a ``POST /v1/route`` body (see the module docstring)."""
    if orjson is not None and body.get("override") is None and _finite_numbers(body):
        try:
            return orjson.dumps(body)
        except TypeError:  # orjson.JSONEncodeError too
            pass
    return json.dumps(body, separators=_COMPACT).encode()


def _finite_numbers(body: Mapping[str, Any]) -> bool:
    """The candidates' numbers are finite (the only floats a route body carries)."""
    for cand in body.get("candidates") or ():
        for key in (
            "cost",
            "weight",
            "cached_cost",
            "input_cost_per_token",
            "output_cost_per_token",
        ):
            value = cand.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                return False
    return True
