"""The report's figure: each variant's difference to control, look by look, with its
confidence sequence (matplotlib, Agg backend, imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from routeiq.experiments.report import METRICS, ExperimentReport


def plot_report(report: ExperimentReport, out: str | Path) -> Path:
    """Write one panel per metric (difference to control vs requests so far) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    out = Path(out)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    try:
        for ax, metric in zip(axes.flat, METRICS, strict=True):
            for variant, by_metric in report.comparisons.items():
                c = by_metric[metric.name]
                # Looks before min_n carry no interval (infinite): leave them blank.
                low = np.where(np.isfinite(c.lows), c.lows, np.nan)
                high = np.where(np.isfinite(c.highs), c.highs, np.nan)
                (line,) = ax.plot(c.looks, c.differences, label=f"{variant} ({c.verdict})")
                ax.fill_between(c.looks, low, high, color=line.get_color(), alpha=0.2)
            ax.axhline(0.0, color="black", linewidth=0.8)
            better = "lower" if metric.lower_is_better else "higher"
            ax.set_title(f"{metric.label} (treatment - {report.control}; {better} is better)")
            ax.legend(fontsize="small")
        for ax in axes[-1]:
            ax.set_xlabel("requests")
        title = report.experiment or "experiment"
        fig.suptitle(
            f"{title}: difference to {report.control} with "
            f"{1 - report.alpha:.0%} always-valid confidence sequence"
        )
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return out
