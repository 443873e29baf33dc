"""What the decision log keeps of a request: its routing text, its feature vector, or nothing.

``log_prompt: text`` (the default) keeps the routing text; ``features`` the featurized tail,
made in the log's writer thread from the router that decided (so training on it can check the
featurizer); ``none`` nothing. A request that asked for no message logging (LiteLLM's
``turn_off_message_logging``, :attr:`RouteRequest.redact`) never has its text kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from routeiq.data.prompts import PromptError, request_text

if TYPE_CHECKING:
    from routeiq.serving.registry import RouterRegistry
    from routeiq.serving.request import RouteRequest
    from routeiq.serving.settings import ResolvedGroup, RouteIQSettings


def logged_prompt(
    settings: RouteIQSettings,
    registry: RouterRegistry,
    group: ResolvedGroup,
    request: RouteRequest,
    text: str | None,
) -> tuple[str | None, Callable[[], dict[str, Any]] | None]:
    """(text to log, maker of the ``features`` field): at most one of them is set.
    ``text`` is the routing text when the decision computed it, else None."""
    mode = settings.log_prompt
    if mode == "none" or (mode == "text" and request.redact):
        return None, None
    if text is None:
        try:
            text = request_text(request.messages, request.input)
        except PromptError:
            return None, None
    if mode == "text":
        return text, None
    learned = registry.get(group.router)
    if learned is None:
        return None, None
    tail = text[-settings.featurize_chars :]
    return None, lambda: learned.log_features(tail)
