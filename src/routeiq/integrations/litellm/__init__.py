"""RouteIQ for LiteLLM: a learned, cost-aware routing strategy for the SDK ``Router`` and the proxy.

SDK: :func:`install` (see :mod:`.installer`). Proxy: list
``routeiq.integrations.litellm.proxy.routeiq_callback`` under ``litellm_settings: callbacks:``
and put RouteIQ's settings in a top-level ``routeiq_settings:`` section (see :mod:`.proxy`
and :mod:`routeiq.serving.settings`). The decision itself is made by
:class:`routeiq.serving.DecisionEngine`, shared with every other front end.
"""

from routeiq.integrations.litellm.callbacks import RouteIQCallback
from routeiq.integrations.litellm.config import load_settings_file
from routeiq.integrations.litellm.installer import (
    attach,
    build_engine,
    install,
    is_attached,
    uninstall,
    validate,
)
from routeiq.integrations.litellm.strategy import RouteIQRoutingStrategy
from routeiq.serving import (
    DecisionLog,
    GroupSettings,
    RouteIQConfigError,
    RouteIQSettings,
    load_routers,
    parse_settings,
)

__all__ = [
    "DecisionLog",
    "GroupSettings",
    "RouteIQCallback",
    "RouteIQConfigError",
    "RouteIQRoutingStrategy",
    "RouteIQSettings",
    "attach",
    "build_engine",
    "install",
    "is_attached",
    "load_routers",
    "load_settings_file",
    "parse_settings",
    "uninstall",
    "validate",
]
