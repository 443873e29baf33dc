"""From LiteLLM deployment dicts to router candidates: which model, and what a request costs.

Model (first that applies):

1. ``model_info.routeiq_model``: set it when the deployment's name differs from the name the
   router was trained with (an unknown name here is a start-up error, not a silent mapping).
2. ``litellm_params.model`` if the router knows it, else the same name without its provider
   prefixes (``openai/gpt-4o-mini`` -> ``gpt-4o-mini``) if the router knows that.
3. ``routeiq_settings.aliases`` maps that name (or its unprefixed form) to a known model.
4. Otherwise ``litellm_params.model`` as is: the core's unknown-model rule applies (the
   router's own aliases, the known model nearest in price, or the mean of the known models).

Cost of one request: ``input_tokens * input price + estimated_output_tokens * output price``,
with per-token prices from the deployment itself (``input_cost_per_token`` /
``output_cost_per_token`` in ``litellm_params``, else ``model_info``), else LiteLLM's cost map
for ``litellm_params.model`` (or ``model_info.base_model``); None when no price is known (the
router's cost model then predicts it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any, TypeGuard

from routeiq.data.prices import Price, litellm_price

Deployment = Mapping[str, Any]


def deployment_id(dep: Deployment) -> str:
    info = dep.get("model_info") or {}
    ident = info.get("id")
    if ident is None:
        raise ValueError(f"deployment of {dep.get('model_name')!r} has no model_info.id")
    return str(ident)


def litellm_model(dep: Deployment) -> str:
    return str((dep.get("litellm_params") or {}).get("model") or dep.get("model_name") or "")


def explicit_model(dep: Deployment) -> str | None:
    value = (dep.get("model_info") or {}).get("routeiq_model")
    return None if value is None else str(value)


def router_model(
    dep: Deployment, known: Collection[str], aliases: Mapping[str, str] | None = None
) -> str:
    """The model name the router should see for ``dep`` (see the module docstring)."""
    explicit = explicit_model(dep)
    if explicit is not None:
        return explicit
    name = litellm_model(dep)
    parts = name.split("/")
    for k in range(len(parts)):
        candidate = "/".join(parts[k:])
        if candidate in known:
            return candidate
        if aliases and candidate in aliases:
            return aliases[candidate]
    return name


def _price_pair(source: Mapping[str, Any] | None) -> Price | None:
    if not source:
        return None
    inp, out = source.get("input_cost_per_token"), source.get("output_cost_per_token")
    if _nonneg(inp) and _nonneg(out):
        return float(inp), float(out)
    return None


def deployment_price(dep: Deployment) -> Price | None:
    """Per-token (input, output) USD prices of a deployment, or None if unknown."""
    own = _price_pair(dep.get("litellm_params")) or _price_pair(dep.get("model_info"))
    if own is not None:
        return own
    info = dep.get("model_info") or {}
    for name in (info.get("base_model"), litellm_model(dep)):
        if name:
            price = litellm_price(str(name))
            if price is not None:
                return price
    return None


def request_cost(price: Price | None, input_tokens: int, output_tokens: int) -> float | None:
    if price is None:
        return None
    return input_tokens * price[0] + output_tokens * price[1]


def _nonneg(value: object) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
