"""RouteLLM's two-model metrics.

For a strong/weak pair, rows are ranked by a score (the router's ``P[:, s] - P[:, w]``) and
the top ``k`` go to the strong model, for every threshold between distinct score values
(RouteLLM's quantile sweep at full resolution). Tied scores enter together and the curve is
linear between thresholds: the expected curve under random tie-breaking, so a constant score
is exactly the random router. PGR = (quality - weak) / (strong - weak); APGR = the area
under PGR over the strong-call share 0..1 (random = 0.5; can exceed 1 when the weak model
wins some rows). CPT(x) = the smallest strong-call share with PGR >= x, as a fraction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from routeiq.evaluation.metrics import _EPS


@dataclass(frozen=True)
class TwoModelCurve:
    """Quality against the share of calls sent to the strong model (RouteLLM)."""

    share: np.ndarray
    quality: np.ndarray
    strong_quality: float
    weak_quality: float

    @property
    def gap(self) -> float:
        return self.strong_quality - self.weak_quality

    def pgr(self) -> np.ndarray | None:
        """Performance gap recovered at each share; None if the two models tie on average."""
        if abs(self.gap) <= _EPS:
            return None
        return (self.quality - self.weak_quality) / self.gap

    def apgr(self) -> float | None:
        p = self.pgr()
        if p is None:
            return None
        return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(self.share)))

    def cpt(self, level: float) -> float | None:
        """Smallest strong-call share (0..1) with PGR >= ``level``; None if never."""
        p = self.pgr()
        if p is None:
            return None
        hit = np.flatnonzero(p >= level - 1e-9)
        if hit.size == 0:
            return None
        i = int(hit[0])
        if i == 0:
            return float(self.share[0])
        x0, x1, p0, p1 = self.share[i - 1], self.share[i], p[i - 1], p[i]
        return float(x0 + (x1 - x0) * min(1.0, max(0.0, (level - p0) / (p1 - p0))))


def two_model_curve(score: Any, q_strong: Any, q_weak: Any) -> TwoModelCurve:
    """Route the rows with the highest ``score`` to the strong model, for every threshold."""
    s = np.asarray(score, dtype=np.float64).ravel()
    qs = np.asarray(q_strong, dtype=np.float64).ravel()
    qw = np.asarray(q_weak, dtype=np.float64).ravel()
    n = s.size
    if n == 0 or qs.shape != s.shape or qw.shape != s.shape:
        raise ValueError("score, q_strong and q_weak must be non-empty and of equal length")
    if not (np.isfinite(s).all() and np.isfinite(qs).all() and np.isfinite(qw).all()):
        raise ValueError("score and qualities must be finite")
    order = np.argsort(-s, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum((qs - qw)[order])])
    ss = s[order]
    # Thresholds between distinct scores: tied rows switch together.
    k = np.concatenate([[0], np.flatnonzero(ss[1:] != ss[:-1]) + 1, [n]])
    weak = float(qw.mean())
    return TwoModelCurve(
        share=k / n,
        quality=weak + gain[k] / n,
        strong_quality=float(qs.mean()),
        weak_quality=weak,
    )
