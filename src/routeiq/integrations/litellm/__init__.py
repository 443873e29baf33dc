"""RouteIQ for LiteLLM: a learned, cost-aware routing strategy for the SDK ``Router`` and the proxy.

SDK: :func:`install` (see :mod:`.installer`). Proxy: list
``routeiq.integrations.litellm.proxy.routeiq_callback`` under ``litellm_settings: callbacks:``
and put RouteIQ's settings in a top-level ``routeiq_settings:`` section (see :mod:`.proxy`
and :mod:`.config`).
"""

from routeiq.integrations.litellm.callbacks import RouteIQCallback
from routeiq.integrations.litellm.config import (
    GroupSettings,
    RouteIQConfigError,
    RouteIQSettings,
    load_settings_file,
    parse_settings,
)
from routeiq.integrations.litellm.decision_log import DecisionLog
from routeiq.integrations.litellm.installer import (
    attach,
    install,
    is_attached,
    load_routers,
    uninstall,
    validate,
)
from routeiq.integrations.litellm.strategy import RouteIQRoutingStrategy

__all__ = [
    "DecisionLog",
    "GroupSettings",
    "RouteIQCallback",
    "RouteIQConfigError",
    "RouteIQRoutingStrategy",
    "RouteIQSettings",
    "attach",
    "install",
    "is_attached",
    "load_routers",
    "load_settings_file",
    "parse_settings",
    "uninstall",
    "validate",
]
