"""A replay simulator: learning curves of online routing on full-information data.

    stream = Stream(x=X, predicted=P, quality=Q, cost=C, models=names)
    curves = simulate(stream, lam=20.0, requests=5000, seed=0)
    curves["online"]["reward"]          # mean reward per window of requests

Every model's outcome is known for every row, so the simulator streams rows in random order
(with replacement), lets each policy choose, and reveals only the chosen model's outcome to
the learning policies, as a gateway would. Policies:

* ``offline``: the learned router as trained, greedy (``predicted`` must be honest:
  out-of-fold or out-of-distribution predictions).
* ``online``: :class:`routeiq.online.OnlineRouter` warm-started from ``predicted``, with
  ``exploration``; ``online-cold``: the same from the price prior only.
* ``best-fixed``: the single model with the best mean reward on the stream, in hindsight.
* ``oracle``: the best model of every row, in hindsight.
* any ``references`` given (for example a router trained in distribution), greedy.
* with a ``budget`` (:class:`~routeiq.online.budget.BudgetController` settings), the
  policies ``budget`` (offline predictions) and ``online-budget`` decide with the lambda the
  controller fits, on the simulator's clock (the request number); ``fixed-hindsight`` is
  the offline router at the one fixed lambda that meets the budget over the whole stream.

Decisions go through the serving rule (:func:`routeiq.decision.rules.decide`, exploration and
its draw included), so the curves are those of the policy the gateway runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routeiq.decision.choice import choose, choose_one, nanmean
from routeiq.decision.exploration import Exploration
from routeiq.decision.rules import decide
from routeiq.online.budget import BudgetController
from routeiq.online.router import OnlineRouter, OnlineSettings

METRICS = ("reward", "quality", "cost", "explored", "lambda")
# The default safe exploration of the simulated gateway: epsilon-greedy within a margin.
SAFE_EXPLORATION = Exploration(mode="epsilon")


@dataclass(frozen=True)
class Stream:
    """Full-information rows: features, honest offline predictions, true quality and cost."""

    x: np.ndarray  # (n, D) the router's feature vectors
    predicted: np.ndarray  # (n, M) offline predicted quality
    quality: np.ndarray  # (n, M) observed quality of every model
    cost: np.ndarray  # (n, M) USD per request
    models: Sequence[str]
    references: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (n, M)
    tasks: Sequence[str] = ()  # optional task per row (drifting mixes)

    def __post_init__(self) -> None:
        n, m = self.quality.shape
        shaped = {"predicted": self.predicted, "cost": self.cost, **self.references}
        for name, arr in shaped.items():
            if arr.shape != (n, m):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(n, m)}")
        if self.x.shape[0] != n or len(self.models) != m:
            raise ValueError("x rows and models must match quality's shape")
        if self.tasks and len(self.tasks) != n:
            raise ValueError(f"tasks has {len(self.tasks)} entries for {n} rows")
        if not (np.isfinite(self.quality).all() and np.isfinite(self.cost).all()):
            raise ValueError(
                "the simulator needs every model's quality and cost on every row "
                "(full-information data such as RouterBench or LLMRouter, not a decision log)"
            )


@dataclass(frozen=True)
class Budget:
    """The budget scenario's controller: ``target`` USD per 1,000 requests, starting from
    ``lam``; ``bucket`` requests per record and ``horizon`` records in a fit."""

    target: float
    lam: float
    bucket: int = 100
    horizon: int = 10
    pacing: float = 0.3
    lam_gain: float = 1.0


def uniform_rows(n_rows: int, requests: int, seed: int) -> np.ndarray:
    """Row indices drawn uniformly with replacement."""
    return np.random.default_rng(seed).integers(0, n_rows, size=requests)


def drift_rows(
    tasks: Sequence[str],
    task: str,
    requests: int,
    seed: int,
    *,
    start: float = 0.1,
    end: float = 0.6,
) -> np.ndarray:
    """Rows whose share of ``task`` rises linearly from ``start`` to ``end``."""
    names = np.asarray(tasks)
    inside, outside = np.flatnonzero(names == task), np.flatnonzero(names != task)
    if inside.size == 0 or outside.size == 0:
        raise ValueError(f"task {task!r} must hold some rows but not all")
    rng = np.random.default_rng(seed)
    share = np.linspace(start, end, requests)
    pick = rng.random(requests) < share
    return np.where(
        pick,
        inside[rng.integers(0, inside.size, requests)],
        outside[rng.integers(0, outside.size, requests)],
    )


def _windows(values: np.ndarray, window: int) -> np.ndarray:
    n = values.size // window * window
    return values[:n].reshape(-1, window).mean(axis=1)


def simulate(
    stream: Stream,
    *,
    lam: float,
    requests: int = 5000,
    window: int = 500,
    seed: int = 0,
    exploration: Exploration | None = None,
    online: OnlineSettings | None = None,
    cold: bool = True,
    warm: bool = True,
    rows: np.ndarray | None = None,
    budget: Budget | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per policy, per metric: the mean over each window of ``window`` requests.

    ``rows`` fixes the stream (default: uniform with replacement); ``warm``/``cold`` select
    the online policies; ``budget`` adds the budget-controlled ones.
    """
    if requests < window or window < 1:
        raise ValueError(f"need requests >= window >= 1, got {requests} and {window}")
    if rows is None:
        rows = uniform_rows(stream.quality.shape[0], requests, seed)
    rows = np.asarray(rows)[:requests]
    requests = rows.size
    q, c = stream.quality[rows], stream.cost[rows]
    utility = q - lam * c
    picks: dict[str, np.ndarray] = {
        "offline": choose(stream.predicted[rows], c, [lam])[0],
        "oracle": choose(q, c, [lam])[0],
    }
    mean_q, mean_c = nanmean(q, axis=0), nanmean(c, axis=0)
    picks["best-fixed"] = np.full(requests, choose_one(mean_q, mean_c, lam))
    for name, pred in stream.references.items():
        picks[name] = choose(pred[rows], c, [lam])[0]
    lams = {k: np.full(requests, lam) for k in picks}
    if budget is not None:
        picks["fixed-hindsight"], fixed = _hindsight(stream.predicted[rows], c, budget.target)
        lams["fixed-hindsight"] = np.full(requests, fixed)
    explore = exploration if exploration is not None else SAFE_EXPLORATION
    base = online or OnlineSettings(enabled=True)
    explored = {k: np.zeros(requests) for k in picks}
    runs: list[tuple[str, OnlineSettings | None, Budget | None]] = []
    if warm:
        runs.append(("online", base.model_copy(update={"warm_start": True}), None))
    if cold:
        runs.append(("online-cold", base.model_copy(update={"warm_start": False}), None))
    if budget is not None:
        runs.append(("budget", None, budget))
        if warm:
            runs.append(("online-budget", base.model_copy(update={"warm_start": True}), budget))
    for name, settings, plan in runs:
        picks[name], explored[name], lams[name] = _learn(
            stream, rows, lam, explore, settings, seed, name, plan
        )
    out: dict[str, dict[str, np.ndarray]] = {}
    idx = np.arange(requests)
    for name, pick in picks.items():
        # Reward at the scenario's lambda for every policy, so budgeted ones compare fairly.
        out[name] = {
            "reward": _windows(utility[idx, pick], window),
            "quality": _windows(q[idx, pick], window),
            "cost": _windows(c[idx, pick], window),
            "explored": _windows(explored[name], window),
            "lambda": _windows(lams[name], window),
        }
    return out


def _hindsight(predicted: np.ndarray, cost: np.ndarray, target: float) -> tuple[np.ndarray, float]:
    """Greedy choices at the one fixed lambda that meets ``target`` (USD per 1,000) over the
    whole stream: the best a fixed lambda could do knowing the drift in advance."""
    rows = np.arange(cost.shape[0])

    def spend(lam: float) -> float:
        return float(cost[rows, choose(predicted, cost, [lam])[0]].mean() * 1000.0)

    lo, hi = -4.0, 8.0  # log10 lambda; bisection: spend falls as lambda grows
    if spend(10.0**lo) <= target:
        hi = lo
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if spend(10.0**mid) <= target else (mid, hi)
    return choose(predicted, cost, [10.0**hi])[0], 10.0**hi


def _learn(
    stream: Stream,
    rows: np.ndarray,
    lam: float,
    explore: Exploration,
    settings: OnlineSettings | None,
    seed: int,
    name: str,
    budget: Budget | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choices of one policy that learns from each chosen outcome (``settings``) and/or
    decides with a budget controller's lambda (``budget``)."""
    models = list(stream.models)
    router = OnlineRouter(models, stream.x.shape[1], settings) if settings else None
    tick = [0.0]
    clock: Callable[[], float] = lambda: tick[0]  # noqa: E731 - the request number
    control = None
    if budget is not None:
        control = BudgetController(
            budget.target,
            lam=budget.lam,
            clock=clock,
            bucket=float(budget.bucket),
            horizon=budget.horizon,
            pacing=budget.pacing,
            lam_gain=budget.lam_gain,
        )
    # Only the learning policies explore: ``budget`` on its own shows the controller alone.
    policy = explore if router is not None else Exploration()
    picks = np.empty(rows.size, dtype=np.int64)
    explored = np.zeros(rows.size)
    lams = np.full(rows.size, lam)
    for t, i in enumerate(rows):
        tick[0] = float(t)
        cost = stream.cost[i]
        ctx: Any = None
        if router is not None:
            quality, ctx = router.adjust(stream.x[i], stream.predicted[i], cost)
        else:
            quality = stream.predicted[i]
        lam_t = control.lam() if control is not None else lam
        decision = decide(
            models,
            models,
            quality,
            cost,
            lam_t,
            None,
            exploration=policy,
            u=policy.draw(f"{seed}-{t}", name),
        )
        j = models.index(decision.chosen)
        picks[t], explored[t], lams[t] = j, float(decision.explored), lam_t
        if control is not None:
            control.observe(quality, cost, spent=float(cost[j]))
        if router is not None:
            prior, z = ctx.row(j)
            router.learn(j, prior, z, float(stream.quality[i, j]))
    return picks, explored, lams


def summarize(
    runs: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Mean and standard deviation over seeds of every policy's curves (JSON-able)."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name in runs[0]:
        out[name] = {}
        for metric in METRICS:
            stack = np.stack([run[name][metric] for run in runs])
            out[name][metric] = {
                "mean": stack.mean(axis=0).tolist(),
                "sd": stack.std(axis=0).tolist(),
            }
    return out


def gain_recovered(
    curves: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
    policy: str,
    reference: str,
    baseline: str = "best-fixed",
    *,
    pooled: bool = True,
) -> list[float]:
    """Per window: (policy - baseline) / (reference - baseline) of mean reward.

    ``pooled`` divides by the reference's gain over the whole stream rather than per window:
    windows where the reference happens to gain little would otherwise blow the ratio up.
    NaN when the reference does not beat the baseline.
    """
    p = np.asarray(curves[policy]["reward"]["mean"])
    r = np.asarray(curves[reference]["reward"]["mean"])
    b = np.asarray(curves[baseline]["reward"]["mean"])
    gap = np.full_like(r, (r - b).mean()) if pooled else r - b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 1e-12, (p - b) / gap, np.nan).tolist()


def _at(values: Sequence[float], requests: int, window: int) -> float | None:
    """The value of the window that ends at ``requests`` (None if there is none)."""
    k = requests // window - 1
    return float(values[k]) if requests % window == 0 and 0 <= k < len(values) else None


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def scenario_summary(
    scenario: str,
    curves: Mapping[str, Mapping[str, Mapping[str, list[float]]]],
    runs: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
    window: int,
    budget: Budget | None = None,
) -> dict[str, Any]:
    """The headline numbers of one scenario (JSON-able), with ``lines`` to print."""
    out: dict[str, Any] = {}
    lines: list[str] = []
    if scenario in ("warm", "shift"):
        on = np.asarray(curves["online"]["reward"]["mean"])
        off = np.asarray(curves["offline"]["reward"]["mean"])
        rel = (on - off) / np.abs(off)
        seed_rel = np.stack([(r["online"]["reward"] - r["offline"]["reward"]) for r in runs])
        seed_rel = seed_rel / np.abs(np.stack([r["offline"]["reward"] for r in runs]))
        after = -(-500 // window)  # windows after the first 500 requests
        out["online_vs_offline"] = rel.tolist()
        if rel.size > after:
            out["worst_window_after_500"] = float(rel[after:].min())
            out["worst_seed_window_after_500"] = float(seed_rel[:, after:].min())
            lines.append(
                f"online vs offline after 500 requests: worst window "
                f"{100 * out['worst_window_after_500']:+.2f}% (mean over seeds), worst single "
                f"seed {100 * out['worst_seed_window_after_500']:+.2f}%; overall "
                f"{100 * (on.mean() / off.mean() - 1):+.2f}%"
            )
    if scenario in ("warm", "cold", "shift"):
        policy = "online-cold" if scenario == "cold" else "online"
        ref = "in-distribution" if scenario == "shift" else "offline"
        gain = gain_recovered(curves, policy, ref)
        out["gain_recovered"] = gain
        at = {n: _at(gain, n, window) for n in (2000, 5000)}
        out["gain_recovered_at"] = at
        lines.append(
            f"{policy}: share of the {ref} router's gain over the best single model: "
            f"{_fmt(at[2000])} at 2,000 requests, {_fmt(at[5000])} at 5,000, "
            f"{_fmt(float(np.mean(gain[-2:])))} over the last two windows"
        )
    if scenario == "shift":
        on = np.asarray(curves["online"]["reward"]["mean"])
        off = np.asarray(curves["offline"]["reward"]["mean"])
        ind = np.asarray(curves["in-distribution"]["reward"]["mean"])
        gap = float((ind - off).mean())
        rec = ((on - off) / gap).tolist() if gap > 1e-12 else [math.nan] * on.size
        out["shift_gap_recovered"] = rec
        lines.append(
            f"shift gap (in-distribution - shifted offline = {gap:+.4f} reward) recovered: "
            f"{_fmt(_at(rec, 2000, window))} at 2,000, {_fmt(_at(rec, 5000, window))} at "
            f"5,000, {_fmt(float(np.mean(rec[-2:])))} over the last two windows"
        )
    if scenario == "budget" and budget is not None:
        per_1000 = budget.target
        for name in ("offline", "fixed-hindsight", "budget", "online-budget"):
            if name not in curves:
                continue
            spend = np.asarray(curves[name]["cost"]["mean"]) * 1000.0
            dev = spend / per_1000 - 1.0
            seeds = np.stack([r[name]["cost"] * 1000.0 / per_1000 - 1.0 for r in runs])
            quality = float(np.mean(curves[name]["quality"]["mean"]))
            out[name] = {
                "spend_per_1000": spend.tolist(),
                "max_deviation_after_first_window": float(np.abs(dev[1:]).max())
                if dev.size > 1
                else None,
                "worst_seed_deviation_after_first_window": float(np.abs(seeds[:, 1:]).max())
                if dev.size > 1
                else None,
                "mean_quality": quality,
                "mean_spend_per_1000": float(spend.mean()),
            }
            label = {"offline": "fixed lambda (meets the budget at the start)"}.get(name, name)
            lines.append(
                f"{label}: spend per 1,000 requests {spend.min():.4g}-{spend.max():.4g} "
                f"(budget {per_1000:.4g}; worst window after the first "
                f"{100 * (out[name]['max_deviation_after_first_window'] or 0):.1f}% off), "
                f"mean quality {quality:.4f}"
            )
    out["lines"] = lines
    return out
