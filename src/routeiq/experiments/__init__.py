"""A/B experiments: sticky assignment, always-valid sequential tests, and the log report.

* :mod:`~routeiq.experiments.assignment`: :class:`ExperimentSettings` and
  :class:`Experiment` (``assign(unit) -> variant``, stable under weight changes).
* :mod:`~routeiq.experiments.sequential`: the mixture SPRT (:class:`MixtureSPRT`,
  :func:`msprt`), an always-valid p-value and confidence sequence for a difference in means.
* :mod:`~routeiq.experiments.report`: :func:`analyze` turns decision-log records into
  per-variant metrics and verdicts (``routeiq experiment report``).
"""

from routeiq.experiments.assignment import (
    BUCKETS,
    Experiment,
    ExperimentSettings,
    VariantSettings,
    bucket,
    split_label,
)
from routeiq.experiments.report import METRICS, Comparison, ExperimentReport, analyze
from routeiq.experiments.sequential import ArmStats, Look, MixtureSPRT, SequentialResult, msprt

__all__ = [
    "BUCKETS",
    "METRICS",
    "ArmStats",
    "Comparison",
    "Experiment",
    "ExperimentReport",
    "ExperimentSettings",
    "Look",
    "MixtureSPRT",
    "SequentialResult",
    "VariantSettings",
    "analyze",
    "bucket",
    "msprt",
    "split_label",
]
