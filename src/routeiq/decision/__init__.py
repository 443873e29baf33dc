"""Turning predicted quality and cost into a routing decision, and fitting lambda to a target."""

from routeiq.decision.calibrate import (
    BudgetTarget,
    Calibration,
    ExpensiveShareTarget,
    QualityTarget,
    Target,
    calibrate_lambda,
    lambda_grid,
    parse_target,
)
from routeiq.decision.policy import (
    CandidateRow,
    Decision,
    check_lambda,
    choose_indices,
    decide,
    fallback_decision,
)
from routeiq.decision.unknown import (
    MEAN_OF_KNOWN,
    ModelMapping,
    ResolvedCandidates,
    check_aliases,
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
    "calibrate_lambda",
    "check_aliases",
    "check_lambda",
    "choose_indices",
    "decide",
    "fallback_decision",
    "lambda_grid",
    "map_model",
    "parse_target",
    "resolve_candidates",
]
