"""Offline evaluation: lambda sweeps, quality-cost frontiers, AIQ, APGR/CPT, baselines, plots."""

from routeiq.evaluation.frontier import plot_frontier, plot_report
from routeiq.evaluation.metrics import (
    Curve,
    Frontier,
    aiq,
    cost_range,
    oracle_choice,
    oracle_point,
    single_models,
    sweep,
    upper_frontier,
)
from routeiq.evaluation.report import (
    EvaluationReport,
    RouterReport,
    evaluate,
    evaluate_router,
    report_curve,
)
from routeiq.evaluation.two_model import TwoModelCurve, two_model_curve

__all__ = [
    "Curve",
    "EvaluationReport",
    "Frontier",
    "RouterReport",
    "TwoModelCurve",
    "aiq",
    "cost_range",
    "evaluate",
    "evaluate_router",
    "oracle_choice",
    "oracle_point",
    "plot_frontier",
    "plot_report",
    "report_curve",
    "single_models",
    "sweep",
    "two_model_curve",
    "upper_frontier",
]
