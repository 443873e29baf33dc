"""From LiteLLM deployment dicts to router candidates: which model, its price and weight.

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
for ``model_info.base_model`` or ``litellm_params.model``; None when no price is known (the
router's cost model then predicts it). Weight (shuffle rule): ``litellm_params.weight``, else
``rpm``, else ``tpm``, else 1, as LiteLLM's ``simple-shuffle`` weighs deployments.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routeiq.data.prices import Price, litellm_cost_entry, litellm_price, price_fields
from routeiq.router import Candidate

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


def deployment_price(dep: Deployment) -> Price | None:
    """Per-token (input, output) USD prices of a deployment, or None if unknown."""
    own = price_fields(dep.get("litellm_params")) or price_fields(dep.get("model_info"))
    if own is not None:
        return own
    info = dep.get("model_info") or {}
    for name in (info.get("base_model"), litellm_model(dep)):
        if name:
            price = litellm_price(str(name))
            if price is not None:
                return price
    return None


def cache_read_price(dep: Deployment) -> float | None:
    """USD per cached input token (``cache_read_input_token_cost`` of the deployment, else
    LiteLLM's map), or None."""
    for source in (dep.get("litellm_params"), dep.get("model_info")):
        value = (source or {}).get("cache_read_input_token_cost")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    info = dep.get("model_info") or {}
    for name in (info.get("base_model"), litellm_model(dep)):
        if name:
            entry = litellm_cost_entry(str(name), "cache_read_input_token_cost")
            value = (entry or {}).get("cache_read_input_token_cost")
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
    return None


def deployment_weight(dep: Deployment) -> float:
    params = dep.get("litellm_params") or {}
    for key in ("weight", "rpm", "tpm"):
        value = params.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value) and value >= 0:
            return float(value)
    return 1.0


@dataclass(frozen=True)
class _Entry:
    dep: Deployment  # identity check: a replaced deployment dict is looked up again
    known: Sequence[str]  # ditto for the router's model list (a swapped router)
    name: str
    model: str
    price: Price | None
    weight: float
    upstream: str
    cache_read: float | None


class DeploymentTable:
    """Per-deployment facts (router model, price, weight) computed once, not per request.

    Entries are keyed by deployment id and re-derived when LiteLLM hands over a different
    dict for that id (config reload) or the group's router changed its model list.
    """

    def __init__(self, aliases: Mapping[str, str] | None = None, max_entries: int = 65_536):
        self.aliases = dict(aliases or {})
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}

    def entry(self, dep: Deployment, known: Sequence[str]) -> _Entry:
        name = deployment_id(dep)
        hit = self._entries.get(name)
        if hit is not None and hit.dep is dep and hit.known is known:
            return hit
        entry = _Entry(
            dep=dep,
            known=known,
            name=name,
            model=router_model(dep, known, self.aliases),
            price=deployment_price(dep),
            weight=deployment_weight(dep),
            upstream=litellm_model(dep),
            cache_read=cache_read_price(dep),
        )
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # bounded: deployment ids come from the operator's config
        self._entries[name] = entry
        return entry

    def candidate(
        self,
        dep: Deployment,
        known: Sequence[str],
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
    ) -> tuple[Candidate, str]:
        """The router candidate for ``dep`` on a request of this size (``cached_tokens`` of
        its input are the conversation so far), and its upstream model."""
        e = self.entry(dep, known)
        cost = cached = None
        if e.price is not None:
            cost = input_tokens * e.price[0] + output_tokens * e.price[1]
            if cached_tokens and e.cache_read is not None:
                cached = cost - cached_tokens * max(e.price[0] - e.cache_read, 0.0)
        candidate = Candidate(e.name, e.model, cost=cost, weight=e.weight, cached_cost=cached)
        return candidate, e.upstream
