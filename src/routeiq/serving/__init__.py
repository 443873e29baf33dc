"""The serving engine: one decision path shared by the LiteLLM SDK and proxy, the CLI and the
routing service; independent of LiteLLM."""

from routeiq.serving.decision_log import DecisionLog, JsonlFileSink, RecordSink, open_sink
from routeiq.serving.engine import DecisionEngine, NoCandidatesError
from routeiq.serving.overrides import OVERRIDE_KEY, OverrideError, Tradeoff, resolve_tradeoff
from routeiq.serving.registry import RouterRegistry, load_routers
from routeiq.serving.request import RouteRequest
from routeiq.serving.settings import (
    GroupSettings,
    ResolvedGroup,
    RouteIQConfigError,
    RouteIQSettings,
)
from routeiq.serving.settings_file import parse_settings

__all__ = [
    "OVERRIDE_KEY",
    "DecisionEngine",
    "DecisionLog",
    "GroupSettings",
    "JsonlFileSink",
    "NoCandidatesError",
    "OverrideError",
    "RecordSink",
    "ResolvedGroup",
    "RouteIQConfigError",
    "RouteIQSettings",
    "RouteRequest",
    "RouterRegistry",
    "Tradeoff",
    "load_routers",
    "open_sink",
    "parse_settings",
    "resolve_tradeoff",
]
