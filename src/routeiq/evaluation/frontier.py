"""Quality-cost frontier plot (PNG), drawn without pyplot so no global backend state is touched."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from routeiq.evaluation.metrics import Curve, Frontier, aiq, upper_frontier

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from routeiq.evaluation.report import EvaluationReport


def _frontier_xy(front: Frontier, right: float) -> tuple[np.ndarray, np.ndarray]:
    """Polyline of ``F`` (straight on its own axis), extended flat to ``right``."""
    x = np.append(front.cost, max(right, float(front.cost[-1])))
    return x, np.append(front.quality, front.quality[-1])


def _front(cost: np.ndarray, quality: np.ndarray, log_cost: bool) -> Frontier | None:
    keep = cost > 0 if log_cost else np.ones(cost.size, dtype=bool)  # zero cost: off a log axis
    return upper_frontier(cost[keep], quality[keep], log_cost=log_cost) if keep.any() else None


def _colors(n: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [tuple(cmap(i % cmap.N)) for i in range(n)]


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def plot_frontier(
    curves: Mapping[str, Curve],
    singles: Mapping[str, tuple[float, float]],
    path: str | os.PathLike[str],
    title: str = "Quality vs cost",
    log_cost: bool = True,
    *,
    oracle: tuple[float, float] | None = None,
    dpi: int = 120,
) -> str:
    """Write a PNG of router frontiers against the single models; returns the path written.

    ``singles`` maps model -> (mean cost, mean quality): drawn as labelled points, with their
    hull (the random-mixture baseline) dashed. Each curve shows its operating points and its
    frontier (straight between vertices on the drawn axis, as AIQ interpolates); legend entries
    carry the AIQ over the single models' cost range (log-cost AIQ when ``log_cost``; a linear
    axis is used if the cheapest model is free). ``oracle`` = (cost, quality) is a star.
    Written atomically (temporary file + rename).
    """
    from matplotlib.figure import Figure  # lazy: importing routeiq.evaluation stays light

    if not singles:
        raise ValueError("singles must contain at least one model")
    names = list(singles)
    sc = np.array([singles[k][0] for k in names], dtype=np.float64)
    sq = np.array([singles[k][1] for k in names], dtype=np.float64)
    lo, hi = float(sc.min()), float(sc.max())
    if log_cost and lo <= 0:
        log_cost = False  # a free model has no place on a log axis

    fig = Figure(figsize=(10.0, 5.8), layout="constrained")
    ax: Axes = fig.subplots()
    if log_cost:
        ax.set_xscale("log")

    def label(name: str, curve: Curve) -> str:
        v = aiq(curve, (lo, hi), log_cost=log_cost)
        return name if v is None else f"{name} ({'log-' if log_cost else ''}AIQ {v:.3f})"

    mixture = Curve(cost=sc, quality=sq)
    mix = _front(sc, sq, log_cost)
    if mix is not None:
        x, y = _frontier_xy(mix, hi)
        ax.plot(x, y, "--", color="0.45", lw=1.3, label=label("random mixture", mixture))

    # One colour per router however many there are (the default cycle repeats after 10).
    colors = _colors(len(curves))
    for i, (name, curve) in enumerate(curves.items()):
        color = colors[i]
        ax.scatter(curve.cost, curve.quality, s=9, color=color, alpha=0.35, linewidths=0)
        front = _front(curve.cost, curve.quality, log_cost)
        if front is not None:
            x, y = _frontier_xy(front, hi)
            ax.plot(x, y, "-", color=color, lw=1.8, label=label(name, curve))

    ax.scatter(sc, sq, s=28, color="black", zorder=5, label="single models")
    for name, c, q in zip(names, sc, sq, strict=True):
        ax.annotate(_short(name), (c, q), xytext=(4, -9), textcoords="offset points", fontsize=7)
    if oracle is not None:
        ax.scatter(
            [oracle[0]],
            [oracle[1]],
            marker="*",
            s=180,
            color="gold",
            edgecolors="black",
            zorder=6,
            label=f"oracle ({oracle[1]:.3f})",
        )

    ax.set_xlabel("mean cost per request (USD" + (", log scale)" if log_cost else ")"))
    ax.set_ylabel("mean quality")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a plot is meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return str(target)


def plot_report(
    report: EvaluationReport,
    path: str | os.PathLike[str],
    title: str | None = None,
    log_cost: bool = True,
) -> str:
    """Plot every router of an :class:`EvaluationReport` with the single models and oracle."""
    curves = {k: r.curve for k, r in report.routers.items() if r.curve is not None}
    return plot_frontier(
        curves,
        report.singles,
        path,
        title or f"Quality vs cost ({report.n_rows} prompts)",
        log_cost,
        oracle=report.oracle,
    )
