"""Build, validate and install a :class:`RouteIQRoutingStrategy` on one LiteLLM ``Router``.

SDK use::

    from litellm import Router
    from routeiq.integrations.litellm import RouteIQSettings, install

    router = Router(model_list=[...])
    strategy = install(router, RouteIQSettings(router="./router", lam=20.0))
    await router.acompletion(model="chat", messages=[...])

Everything fails at install time with :class:`RouteIQConfigError` when it would fail per
request: an artifact that does not load or verify (or does not match a pinned
``router_digest``), a group in ``route`` mode without a router, a deployment whose
``model_info.routeiq_model`` names a model the router does not know, an alias to an unknown
model, a bad target. A group none of whose deployments maps to a known model is served by the
shuffle rule with a warning (an error with ``strict: true``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from routeiq.default_router import is_default_router
from routeiq.integrations.litellm import deployments as deps
from routeiq.integrations.litellm.callbacks import RouteIQCallback
from routeiq.integrations.litellm.strategy import RouteIQRoutingStrategy
from routeiq.router import LearnedRouter
from routeiq.security.ssrf_litellm import deployment_url_problems
from routeiq.serving.decision_log import DecisionLog
from routeiq.serving.engine import DecisionEngine
from routeiq.serving.registry import RouterRegistry, load_routers
from routeiq.serving.reload import watch_routers
from routeiq.serving.settings import RouteIQConfigError, RouteIQSettings
from routeiq.telemetry.metrics import RouteIQMetrics

log = logging.getLogger(__name__)


def validate(
    settings: RouteIQSettings,
    model_list: Iterable[Mapping[str, Any]],
    registry: RouterRegistry,
    *,
    warn: bool = True,
) -> list[str]:
    """Check the settings against a model list; raise one error listing every problem.

    Returns the groups in ``route`` mode none of whose deployments maps to a model the router
    knows (an embeddings group, say): they are served by the shuffle rule, with one warning
    (``strict: true`` makes them an error).
    """
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    for dep in model_list:
        by_group.setdefault(str(dep.get("model_name")), []).append(dep)
    problems: list[str] = []
    unrouted: list[str] = []
    for name in settings.groups if warn else ():
        if name not in by_group:
            log.warning(
                "routeiq_settings.groups.%s: no such model group in the model list "
                "(known groups: %s)",
                name,
                sorted(by_group),
            )
    for name, group_deps in sorted(by_group.items()):
        group = settings.group(name)
        if group.mode != "route":
            continue
        learned = registry.get(group.router)
        if learned is None:
            why = "router: none" if group.router is None else f"none loaded from {group.router}"
            problems.append(
                f"model group {name!r} is in mode 'route' but has no router artifact ({why}): "
                "set routeiq_settings.router (or groups.<group>.router) to an artifact directory "
                "or 'default' (the packaged router), or mode: cheapest/shuffle"
            )
            continue
        if group.router_digest and learned.digest != group.router_digest:
            problems.append(
                f"model group {name!r}: router artifact {group.router} has digest "
                f"{learned.digest}, but router_digest pins {group.router_digest}"
            )
        known = list(learned.models_)
        mapped = []
        for dep in group_deps:
            explicit = deps.explicit_model(dep)
            if explicit is not None and explicit not in known:
                problems.append(
                    f"model group {name!r}: deployment {_dep_label(dep)} sets "
                    f"model_info.routeiq_model={explicit!r}, which the router does not know "
                    f"(known: {known})"
                )
            mapped.append(deps.router_model(dep, known, settings.aliases))
        router_aliases = getattr(learned, "aliases", {}) or {}
        # The packaged default knows price tiers, not names: a priced deployment maps onto the
        # tier nearest its price (routeiq.decision.unknown), so the group is routed.
        by_price = is_default_router(group.router) and any(
            deps.deployment_price(dep) is not None for dep in group_deps
        )
        if not by_price and not any(m in known or router_aliases.get(m) in known for m in mapped):
            if settings.strict:
                problems.append(
                    f"model group {name!r}: none of its deployments maps to a model the router "
                    f"knows (deployments map to {mapped}; router knows {known}); set "
                    "model_info.routeiq_model on the deployments or routeiq_settings.aliases, "
                    "or drop strict: true to serve it with the shuffle rule"
                )
            unrouted.append(name)
            continue
        if group.target is not None:
            try:
                learned.calibrate(group.target)  # also warms the cache for the first request
            except Exception as exc:
                problems.append(f"model group {name!r}: target {group.target!r}: {exc}")
    if settings.aliases:
        all_known = {m for r in registry.all() for m in r.models_}
        bad = {k: v for k, v in settings.aliases.items() if v not in all_known}
        if bad:
            problems.append(
                f"routeiq_settings.aliases point to models no router knows: {bad} "
                f"(known: {sorted(all_known)})"
            )
    if settings.ssrf.enabled:  # every deployment, whatever its group's mode
        every = [dep for group_deps in by_group.values() for dep in group_deps]
        problems += deployment_url_problems(every, settings.ssrf)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise RouteIQConfigError(f"RouteIQ settings do not fit the model list:\n{listed}")
    if unrouted and warn:
        log.warning(
            "RouteIQ: model groups %s map to no model the router knows; they are served by "
            "the shuffle rule (LiteLLM's simple-shuffle). Set model_info.routeiq_model or "
            "aliases to route them, or strict: true to refuse.",
            unrouted,
        )
    return unrouted


def build_engine(
    settings: RouteIQSettings,
    model_list: Iterable[Mapping[str, Any]],
    registry: RouterRegistry,
    *,
    decision_log: DecisionLog | None = None,
    metrics: RouteIQMetrics | None = None,
    tracer_provider: Any = None,
    **engine_kwargs: Any,
) -> DecisionEngine:
    """Validate the settings against ``model_list`` and build the engine (and its log)."""
    model_list = list(model_list)  # validated again at each hot reload
    unrouted = validate(settings, model_list, registry)
    if decision_log is None and settings.decision_log is not None:
        decision_log = DecisionLog(
            settings.decision_log,
            pending_ttl_s=settings.pending_ttl_s,
            max_pending=settings.max_pending,
            max_queued=settings.max_queued_records,
            metrics=metrics,
        )
    engine_class = DecisionEngine
    if settings.service is not None:  # decisions by the routing service, this one on failure
        from routeiq.integrations.litellm.remote import RemoteEngine

        engine_class = RemoteEngine
    engine = engine_class(
        settings,
        registry,
        decision_log=decision_log,
        metrics=metrics,
        tracer_provider=tracer_provider,
        unrouted=unrouted,
        **engine_kwargs,
    )
    if settings.hot_reload.enabled:  # new artifact versions: verified in a thread, swapped in
        watch_routers(
            engine, lambda candidate: validate(settings, model_list, candidate, warn=False)
        )
    return engine


def install(
    router: Any,
    settings: RouteIQSettings | None = None,
    *,
    default_router: LearnedRouter | None = None,
    routers: Mapping[Path, LearnedRouter] | None = None,
    decision_log: DecisionLog | None = None,
    metrics: RouteIQMetrics | None = None,
    tracer_provider: Any = None,
    register_callback: bool = True,
    **engine_kwargs: Any,
) -> RouteIQRoutingStrategy:
    """Validate and install RouteIQ on ``router``; returns the installed strategy.

    ``routers`` defaults to loading every artifact in ``settings``; ``decision_log`` defaults
    to a :class:`DecisionLog` on ``settings.decision_log`` (a file or a Redis stream) when set.
    With ``register_callback``, the outcome callback is appended to ``litellm.callbacks``;
    :func:`uninstall` removes it again (and flushes the log).
    """
    settings = settings if settings is not None else RouteIQSettings()
    registry = RouterRegistry(
        dict(routers) if routers is not None else load_routers(settings), default_router
    )
    engine = build_engine(
        settings,
        model_list_of(router),
        registry,
        decision_log=decision_log,
        metrics=metrics,
        tracer_provider=tracer_provider,
        **engine_kwargs,
    )
    strategy = RouteIQRoutingStrategy(router, engine)
    attach(router, strategy)
    if register_callback:
        import litellm

        strategy.callback = RouteIQCallback(
            strategy.token, engine, response_headers=settings.response_headers
        )
        litellm.logging_callback_manager.add_litellm_callback(strategy.callback)
    return strategy


def model_list_of(router: Any) -> list[Any]:
    """The router's deployments (1.110+: ``registry().all()``; before: ``model_list``)."""
    registry = getattr(router, "registry", None)
    if callable(registry):
        return list(registry().all())
    return list(router.model_list)


def attach(router: Any, strategy: RouteIQRoutingStrategy) -> None:
    """Install on this Router instance only (1.110+: ``register_plugin``)."""
    register = getattr(router, "register_plugin", None)
    if callable(register):
        register(strategy)
    else:
        router.set_custom_routing_strategy(strategy)


def is_attached(router: Any, strategy: RouteIQRoutingStrategy) -> bool:
    """Whether ``strategy`` still picks for ``router`` (``update_settings`` can drop it)."""
    bound = getattr(router, "__dict__", {}).get("async_get_available_deployment")
    if getattr(bound, "__self__", None) is strategy:
        return True
    core = getattr(router, "__dict__", {}).get("_core", router)
    return getattr(core, "_custom_strategy", None) is strategy


def uninstall(router: Any, strategy: RouteIQRoutingStrategy) -> None:
    """Remove the strategy (back to the router's own strategy) and its callback."""
    import litellm

    if is_attached(router, strategy):
        reset = getattr(router, "_reset_custom_routing_strategy", None)  # 1.108
        if callable(reset):
            reset()
        else:  # 1.110+: re-initialising the configured strategy drops a plugin
            router.routing_strategy_init(router.settings().routing_strategy, {})
    callback = getattr(strategy, "callback", None)
    if callback is not None:
        # LiteLLM copies callbacks into its per-event lists on first use: remove it everywhere.
        for name in (
            "callbacks",
            "success_callback",
            "failure_callback",
            "_async_success_callback",
            "_async_failure_callback",
        ):
            registered = getattr(litellm, name, None)
            while isinstance(registered, list) and callback in registered:
                registered.remove(callback)
    strategy.close()


def _dep_label(dep: Mapping[str, Any]) -> str:
    ident = (dep.get("model_info") or {}).get("id")
    return f"{deps.litellm_model(dep)!r}" + (f" (id {ident})" if ident else "")
