"""Turning predicted quality and cost into a routing decision, and fitting lambda to a target.

:mod:`.choice` is the one choice kernel (serving, calibration and evaluation all use it);
:mod:`.decision` the one :class:`Decision` type and the rules that make one.
"""

from routeiq.decision.calibrate import Calibration, calibrate_lambda
from routeiq.decision.choice import (
    best_single,
    cheapest_single,
    check_lambda,
    choose,
    choose_one,
    lambda_grid,
    switch_points,
)
from routeiq.decision.decision import CandidateRow, Decision
from routeiq.decision.rules import cheapest, decide, pinned, shuffle
from routeiq.decision.targets import (
    BudgetTarget,
    ExpensiveShareTarget,
    QualityTarget,
    Target,
    parse_target,
)
from routeiq.decision.unknown import (
    MEAN_OF_KNOWN,
    ModelMapping,
    ResolvedCandidates,
    map_model,
    resolve_candidates,
)

__all__ = [
    "MEAN_OF_KNOWN",
    "BudgetTarget",
    "Calibration",
    "CandidateRow",
    "Decision",
    "ExpensiveShareTarget",
    "ModelMapping",
    "QualityTarget",
    "ResolvedCandidates",
    "Target",
    "best_single",
    "calibrate_lambda",
    "cheapest",
    "cheapest_single",
    "check_lambda",
    "choose",
    "choose_one",
    "decide",
    "lambda_grid",
    "map_model",
    "parse_target",
    "pinned",
    "resolve_candidates",
    "shuffle",
    "switch_points",
]
