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

Decisions go through the serving rule (:func:`routeiq.decision.rules.decide`, exploration and
its draw included), so the curves are those of the policy the gateway runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from routeiq.decision.choice import choose, choose_one, nanmean
from routeiq.decision.exploration import Exploration
from routeiq.decision.rules import decide
from routeiq.online.router import OnlineRouter, OnlineSettings

METRICS = ("reward", "quality", "cost", "explored")


@dataclass(frozen=True)
class Stream:
    """Full-information rows: features, honest offline predictions, true quality and cost."""

    x: np.ndarray  # (n, D) the router's feature vectors
    predicted: np.ndarray  # (n, M) offline predicted quality
    quality: np.ndarray  # (n, M) observed quality of every model
    cost: np.ndarray  # (n, M) USD per request
    models: Sequence[str]
    references: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> (n, M)

    def __post_init__(self) -> None:
        n, m = self.quality.shape
        for name, arr in [("predicted", self.predicted), ("cost", self.cost)] + list(
            self.references.items()
        ):
            if arr.shape != (n, m):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(n, m)}")
        if self.x.shape[0] != n or len(self.models) != m:
            raise ValueError("x rows and models must match quality's shape")
        if not (np.isfinite(self.quality).all() and np.isfinite(self.cost).all()):
            raise ValueError("the simulator needs every model's quality and cost on every row")


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
) -> dict[str, dict[str, np.ndarray]]:
    """Per policy, per metric: the mean over each window of ``window`` requests."""
    if requests < window or window < 1:
        raise ValueError("need requests >= window >= 1")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, stream.quality.shape[0], size=requests)
    q, c = stream.quality[rows], stream.cost[rows]
    utility = q - lam * c
    picks: dict[str, np.ndarray] = {
        "offline": choose(stream.predicted[rows], c, [lam])[0],
        "oracle": choose(q, c, [lam])[0],
    }
    mean_q, mean_c = nanmean(stream.quality, axis=0), nanmean(stream.cost, axis=0)
    picks["best-fixed"] = np.full(requests, choose_one(mean_q, mean_c, lam))
    for name, pred in stream.references.items():
        picks[name] = choose(pred[rows], c, [lam])[0]
    explore = exploration if exploration is not None else Exploration()
    base = online or OnlineSettings(enabled=True)
    learners = {"online": base}
    if cold:
        learners["online-cold"] = base.model_copy(update={"warm_start": False})
    explored: dict[str, np.ndarray] = {k: np.zeros(requests) for k in picks}
    for name, settings in learners.items():
        picks[name], explored[name] = _learn(stream, rows, lam, explore, settings, seed, name)
    out: dict[str, dict[str, np.ndarray]] = {}
    idx = np.arange(requests)
    for name, pick in picks.items():
        out[name] = {
            "reward": _windows(utility[idx, pick], window),
            "quality": _windows(q[idx, pick], window),
            "cost": _windows(c[idx, pick], window),
            "explored": _windows(explored[name], window),
        }
    return out


def _learn(
    stream: Stream,
    rows: np.ndarray,
    lam: float,
    explore: Exploration,
    settings: OnlineSettings,
    seed: int,
    name: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Choices of one online policy that learns from each chosen outcome."""
    models = list(stream.models)
    router = OnlineRouter(models, stream.x.shape[1], settings)
    picks = np.empty(rows.size, dtype=np.int64)
    explored = np.zeros(rows.size)
    for t, i in enumerate(rows):
        cost = stream.cost[i]
        quality, ctx = router.adjust(stream.x[i], stream.predicted[i], cost)
        decision = decide(
            models,
            models,
            quality,
            cost,
            lam,
            None,
            exploration=explore,
            u=explore.draw(f"{seed}-{t}", name),
        )
        j = router.index[decision.chosen]
        picks[t] = j
        explored[t] = float(decision.explored)
        router.learn(j, *ctx.row(j), observed=float(stream.quality[i, j]))
    return picks, explored


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
) -> list[float]:
    """Per window: (policy - baseline) / (reference - baseline) of mean reward."""
    p = np.asarray(curves[policy]["reward"]["mean"])
    r = np.asarray(curves[reference]["reward"]["mean"])
    b = np.asarray(curves[baseline]["reward"]["mean"])
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((p - b) / (r - b)).tolist()
