"""A/B arms in serving: which variant's settings decide a request, and its logged label."""

from __future__ import annotations

from typing import TYPE_CHECKING

from routeiq.experiments.assignment import Experiment
from routeiq.serving.settings import ResolvedGroup

if TYPE_CHECKING:
    from routeiq.serving.request import RouteRequest


def unit_value(kind: str, request: RouteRequest, decision_id: str) -> str | None:
    """A request's experiment unit: its end ``user``, ``team``, ``key`` (hash), or the
    ``request`` (its first decision id, so retries stay in the arm)."""
    ident = request.identity
    if kind == "user":
        return request.user
    if kind == "team":
        return None if ident is None else ident.team_id
    if kind == "key":
        return None if ident is None else ident.key_hash
    return request.request_id or decision_id


class ExperimentArms:
    """The experiment of each group (built once) and each arm's resolved settings."""

    def __init__(self) -> None:
        self._experiments: dict[str, Experiment] = {}
        self._arms: dict[tuple[str, str], ResolvedGroup] = {}

    def arm(
        self, group: ResolvedGroup, request: RouteRequest, decision_id: str
    ) -> tuple[ResolvedGroup, str | None]:
        """The settings of the arm the request's unit falls in, and its label.

        A request without the experiment's unit (no end user, say) gets control's settings
        but no label: it cannot be sticky, so it stays out of the analysis."""
        if group.experiment is None:
            return group, None
        exp = self._experiments.get(group.name)
        if exp is None:
            exp = self._experiments.setdefault(group.name, Experiment(group.experiment))
        unit = unit_value(group.experiment.unit, request, decision_id)
        name = exp.assign(unit)
        arm = self._arms.get((group.name, name))
        if arm is None:
            arm = self._arms.setdefault((group.name, name), group.for_variant(name))
        return arm, exp.label(name) if unit else None
