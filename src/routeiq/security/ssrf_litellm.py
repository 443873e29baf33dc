"""The SSRF guard applied to LiteLLM: deployment URLs at start-up, client URLs per request.

>>> deployment_url_problems(
...     [{"model_name": "chat", "litellm_params": {"model": "openai/x",
...       "api_base": "http://169.254.169.254/"}}], SSRFSettings())  # doctest: +ELLIPSIS
["model group 'chat': deployment 'openai/x': litellm_params.api_base refused ... (metadata)..."]

No LiteLLM import: these work on the plain dicts of a model list and a request body. The
installer and the proxy hook call them (see ``docs/ssrf.md``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from routeiq.security.ssrf import Resolver, acheck_url, check_url
from routeiq.security.ssrf_errors import UnsafeURLError
from routeiq.security.ssrf_settings import SSRFSettings

# litellm_params that choose where LiteLLM sends the request.
URL_PARAMS = (
    "api_base",
    "base_url",
    "aws_bedrock_runtime_endpoint",
    "s3_endpoint_url",
    "sagemaker_base_url",
    "deployment_url",
)
# Request-body dicts LiteLLM spreads into the call's params.
_NESTED = ("extra_body", "litellm_embedding_config")
_HINT = (
    "allow a private model server with routeiq_settings.ssrf.allow_cidrs or allow_hosts "
    "(and allow_ports)"
)


def deployment_url_problems(
    model_list: Iterable[Mapping[str, Any]],
    settings: SSRFSettings,
    resolver: Resolver | None = None,
) -> list[str]:
    """One line per deployment URL the guard refuses (names the group, deployment, reason).

    An ``os.environ/NAME`` reference is checked with the variable's value; one that is not
    set here is skipped (the proxy re-checks its router's resolved model list when it
    installs RouteIQ).
    """
    problems = []
    for dep in model_list:
        params = dep.get("litellm_params") or {}
        if not isinstance(params, Mapping):
            continue
        for key in URL_PARAMS:
            value = params.get(key)
            if value is None or value == "":
                continue
            where = f"model group {dep.get('model_name')!r}: deployment {_label(dep)}"
            if not isinstance(value, str):
                problems.append(f"{where}: litellm_params.{key} is not a URL string: {value!r}")
                continue
            url = _env(value)
            if url is None:
                continue
            try:
                check_url(url, settings, resolver)
            except UnsafeURLError as exc:
                problems.append(f"{where}: litellm_params.{key} {exc}; {_HINT}")
    return problems


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: an HTTP status, a message and the offending parameter."""

    status: int
    message: str
    param: str


def client_urls(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(parameter, value) of every endpoint URL a client put in a request body."""
    found = [(k, data[k]) for k in URL_PARAMS if data.get(k) not in (None, "")]
    for outer in _NESTED:
        nested = data.get(outer)
        if isinstance(nested, Mapping):
            found += [
                (f"{outer}.{k}", nested[k]) for k in URL_PARAMS if nested.get(k) not in (None, "")
            ]
    return found


async def client_url_refusal(
    data: Mapping[str, Any], settings: SSRFSettings, resolver: Resolver | None = None
) -> Refusal | None:
    """Refuse client-sent endpoint URLs: 403 unless allowed, 400 when the guard refuses one.

    ``user_config`` (a per-request model list) counts as a client URL too.
    """
    urls = client_urls(data)
    user_config = data.get("user_config")
    if not urls and user_config is None:
        return None
    if not settings.allow_client_base_url:
        param = urls[0][0] if urls else "user_config"
        return Refusal(
            403,
            f"RouteIQ: a per-request {param} is not allowed on this proxy "
            "(routeiq_settings.ssrf.allow_client_base_url is false)",
            param,
        )
    for param, value in urls:
        if not isinstance(value, str):
            return Refusal(400, f"RouteIQ: {param} must be a URL string", param)
        try:
            await acheck_url(value, settings, resolver)
        except UnsafeURLError as exc:
            return Refusal(400, f"RouteIQ: {param} {exc}", param)
    if user_config is not None:
        model_list = user_config.get("model_list") if isinstance(user_config, Mapping) else None
        if not isinstance(model_list, list):
            return Refusal(400, "RouteIQ: user_config must hold a model_list", "user_config")
        import asyncio

        problems = await asyncio.to_thread(
            deployment_url_problems,
            [d for d in model_list if isinstance(d, Mapping)],
            settings,
            resolver,
        )
        if problems:
            return Refusal(400, f"RouteIQ: user_config {problems[0]}", "user_config")
    return None


async def refuse_client_urls(
    data: Mapping[str, Any], settings: SSRFSettings, resolver: Resolver | None = None
) -> None:
    """Raise LiteLLM's ``ProxyException`` (403/400, its error shape) for a refused client URL.

    Nothing happens with ``ssrf.enabled`` false: stock LiteLLM behaviour.
    """
    if not settings.enabled:
        return
    refusal = await client_url_refusal(data, settings, resolver)
    if refusal is None:
        return
    from litellm.proxy._types import ProxyException

    kind = "permission_error" if refusal.status == 403 else "invalid_request_error"
    raise ProxyException(
        message=refusal.message, type=kind, param=refusal.param, code=refusal.status
    )


def _label(dep: Mapping[str, Any]) -> str:
    params = dep.get("litellm_params") or {}
    ident = (dep.get("model_info") or {}).get("id")
    return f"{params.get('model')!r}" + (f" (id {ident})" if ident else "")


def _env(value: str) -> str | None:
    if value.startswith("os.environ/"):
        return os.environ.get(value.removeprefix("os.environ/")) or None
    return value
