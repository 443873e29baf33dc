"""The feedback endpoint's request body: bounded, parsed and checked item by item.

LiteLLM's error shape for refusals (:func:`error_body`); the rating itself is
:mod:`routeiq.integrations.litellm.feedback_endpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

MAX_BODY_BYTES = 1_000_000
MAX_ITEMS = 1_000
MAX_DECISION_ID_CHARS = 256
_FIELDS = ("decision_id", "score", "metric")

TYPES = {
    400: "invalid_request_error",
    411: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    500: "internal_server_error",
    503: "service_unavailable_error",
}


class Refused(Exception):
    """A refusal with its HTTP status (body problems, an unavailable engine...)."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """LiteLLM's error shape (``ProxyException.to_dict``): message, type, param, code."""
    return {
        "message": message,
        "type": TYPES.get(status, "invalid_request_error"),
        "param": param,
        "code": str(status),
    }


@dataclass
class Payload:
    items: list[Any]
    batch: bool
    problems: dict[int, Refused] = field(default_factory=dict)


async def read_payload(request: Request) -> Payload:
    """Bound and parse the body, before LiteLLM's auth dependency reads it."""
    from litellm.proxy._types import ProxyException

    def refuse(status: int, message: str, param: str | None = "body") -> ProxyException:
        return ProxyException(message=message, type=TYPES[status], param=param, code=status)

    length = request.headers.get("content-length")
    if length is None:
        if request.headers.get("transfer-encoding"):
            raise refuse(411, "send the feedback body with a Content-Length header")
        raise refuse(422, _SHAPE)
    try:
        size = int(length)
    except ValueError:
        raise refuse(400, "invalid Content-Length header") from None
    if size > MAX_BODY_BYTES:
        raise refuse(413, f"feedback body is {size} bytes; at most {MAX_BODY_BYTES} are accepted")
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise refuse(400, f"feedback body is not valid JSON: {exc}") from None
    batch = isinstance(data, list)
    if isinstance(data, dict) and set(data) == {"items"}:
        data, batch = data["items"], True
        if not isinstance(data, list):
            raise refuse(422, "'items' must be a list of feedback objects", "items")
    if batch:
        if not data:
            raise refuse(422, "the batch is empty: send at least one feedback object")
        if len(data) > MAX_ITEMS:
            raise refuse(413, f"the batch has {len(data)} items; at most {MAX_ITEMS} per request")
    elif not isinstance(data, dict):
        raise refuse(422, _SHAPE)
    # LiteLLM's auth parses the body as an object (a JSON list makes it fail with a 500):
    # hand it the parsed object, or an empty one for a list, through its parsed-body cache.
    try:
        from litellm.proxy.common_utils.http_parsing_utils import safe_set_request_parsed_body
    except ImportError:
        if isinstance(data, list):
            raise refuse(
                400, 'send a batch as {"items": [...]} with this LiteLLM version'
            ) from None
    else:
        safe_set_request_parsed_body(request, data if isinstance(data, dict) else {})
    items = list(data) if batch else [data]
    problems: dict[int, Refused] = {}
    for i, item in enumerate(items):
        try:
            items[i] = _item(item)
        except Refused as exc:
            problems[i] = exc
    return Payload(items, batch, problems)


_SHAPE = (
    'feedback body must be a JSON object {"decision_id": "...", "score": 0.8 | "up" | '
    '"down" | true, "metric": "quality"} or a list of them'
)


def _item(obj: Any) -> tuple[str, Any, str | None]:
    if not isinstance(obj, dict):
        raise Refused(422, f"feedback item must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(str(k) for k in obj if k not in _FIELDS)
    if unknown:
        raise Refused(
            422,
            f"unknown field(s) {', '.join(map(repr, unknown))}; expected decision_id, score "
            "and optionally metric",
            unknown[0],
        )
    decision_id = obj.get("decision_id")
    if decision_id is None:
        raise Refused(
            422, "decision_id is required (the x-routeiq-decision-id header)", "decision_id"
        )
    if not isinstance(decision_id, str) or not decision_id.strip():
        raise Refused(422, "decision_id must be a non-empty string", "decision_id")
    if len(decision_id) > MAX_DECISION_ID_CHARS:
        raise Refused(
            422, f"decision_id is longer than {MAX_DECISION_ID_CHARS} characters", "decision_id"
        )
    if "score" not in obj or obj["score"] is None:
        raise Refused(
            422, "score is required: a number in [0, 1], true/false, or 'up'/'down'", "score"
        )
    metric = obj.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise Refused(422, "metric must be a string", "metric")
    return decision_id, obj["score"], metric
