"""Simulator scenarios: which rows a scenario trains on and streams, and its routers.

``warm``/``cold`` stream every row with the in-distribution router's out-of-fold
predictions; ``shift`` trains a router on some tasks and streams the others (the
in-distribution router as the reference); ``budget`` drifts the mix toward its costliest
task. Used by ``routeiq simulate`` and ``bench/online_learning.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from routeiq.data.dataset import RoutingDataset
from routeiq.decision.choice import choose
from routeiq.decision.exploration import Exploration
from routeiq.evaluation.simulate import Budget, Stream, drift_rows, simulate
from routeiq.online.router import OnlineSettings

SCENARIOS = ("warm", "cold", "shift", "budget")
START_SHARE = 0.1  # the budget scenario's expensive-task share at the start (-> 0.6)


@dataclass(frozen=True)
class Plan:
    """What a scenario trains and streams: row indices into the labelled dataset."""

    scenario: str
    stream_rows: np.ndarray
    train_rows: np.ndarray | None = None  # shift: the shifted router's training rows
    train_tasks: tuple[str, ...] = ()
    stream_tasks: tuple[str, ...] = ()
    expensive_task: str | None = None

    @property
    def trainings(self) -> list[str]:
        return ["in-distribution", "shifted"] if self.train_rows is not None else ["router"]

    def describe(self) -> dict[str, Any]:
        return {
            "train_tasks": list(self.train_tasks),
            "stream_tasks": list(self.stream_tasks),
            "expensive_task": self.expensive_task,
        }


def check_full_information(dataset: RoutingDataset) -> None:
    """The simulator reveals any model's outcome: every quality and cost must be known."""
    missing = ~(np.isfinite(dataset.quality) & np.isfinite(dataset.cost))
    if missing.any():
        rows = int(missing.any(axis=1).sum())
        raise ValueError(
            f"the simulator needs every model's quality and cost on every row; {rows} of "
            f"{len(dataset)} rows miss some (a decision log has one model per prompt: use "
            "full-information data such as RouterBench, or LLMRouter with --prices)"
        )


def plan_scenario(
    dataset: RoutingDataset,
    scenario: str,
    *,
    train_tasks: Sequence[str] = (),
    stream_tasks: Sequence[str] = (),
    expensive_task: str | None = None,
) -> Plan:
    """Check the scenario's task names against the data and pick the rows."""
    tasks = np.asarray(dataset.tasks)
    known = sorted(set(dataset.tasks))
    if scenario in ("shift", "budget") and len(known) < 2:
        raise ValueError(f"--scenario {scenario} needs a dataset with at least two tasks")

    def check(names: Sequence[str], flag: str) -> None:
        unknown = [t for t in names if t not in known]
        if unknown:
            raise ValueError(f"{flag}: unknown task(s) {unknown}; the tasks are {known}")

    if scenario == "shift":
        if not train_tasks:
            raise ValueError(f"--scenario shift needs --train-tasks (some of {known})")
        check(train_tasks, "--train-tasks")
        check(stream_tasks, "--stream-tasks")
        streamed = list(stream_tasks) or [t for t in known if t not in train_tasks]
        if not streamed:
            raise ValueError("--train-tasks covers every task: nothing left to stream")
        train = np.flatnonzero(np.isin(tasks, list(train_tasks)))
        return Plan(
            scenario,
            np.flatnonzero(np.isin(tasks, streamed)),
            train,
            tuple(train_tasks),
            tuple(streamed),
        )
    every = np.arange(len(dataset))
    if scenario == "budget" and expensive_task is not None:
        check([expensive_task], "--expensive-task")
        return Plan(scenario, every, expensive_task=expensive_task)
    return Plan(scenario, every)


def build_stream(
    dataset: RoutingDataset,
    plan: Plan,
    make_router: Callable[[], Any],
    *,
    on_step: Callable[[str], None] = lambda _: None,
    on_done: Callable[[], None] = lambda: None,
) -> tuple[Stream, float]:
    """Train the scenario's routers; the stream and the lambda to simulate with.

    The in-distribution router trains on every row and streams its out-of-fold predictions
    (honest: no row was predicted by a model that saw it). Shift streams a router trained
    on ``plan.train_rows`` only, with the in-distribution one as the reference.
    """
    on_step(f"training the router on {len(dataset)} prompts (with 5-fold predictions)")
    full = make_router().fit(dataset)
    on_done()
    rows = plan.stream_rows
    part = dataset.subset(rows)
    references: dict[str, np.ndarray] = {}
    if plan.train_rows is None:
        x = full.featurizer.transform(part.prompts)
        predicted = full.calibration_["predicted_quality"][rows]
    else:
        on_step(f"training the shifted router on {plan.train_rows.size} prompts")
        shifted = make_router().fit(dataset.subset(plan.train_rows))
        on_done()
        x = shifted.featurizer.transform(part.prompts)
        predicted = shifted.quality_model.predict(x)
        references["in-distribution"] = full.calibration_["predicted_quality"][rows]
    stream = Stream(
        x=np.asarray(x, dtype=np.float64),
        predicted=np.asarray(predicted, dtype=np.float64),
        quality=part.quality,
        cost=part.cost,
        models=list(full.models_),
        references=references,
        tasks=list(part.tasks),
    )
    return stream, float(full.lam)


def _spent(stream: Stream, lam: float) -> np.ndarray:
    pick = choose(stream.predicted, stream.cost, [lam])[0]
    return stream.cost[np.arange(pick.size), pick]


def costliest_task(stream: Stream, lam: float) -> str:
    """The task on which the offline router at ``lam`` spends the most per request."""
    spent, tasks = _spent(stream, lam), np.asarray(stream.tasks)
    return str(max(sorted(set(stream.tasks)), key=lambda t: float(spent[tasks == t].mean())))


def starting_spend(stream: Stream, lam: float, task: str) -> float:
    """USD per 1,000 requests of the offline router at ``lam`` on the starting mix."""
    spent = _spent(stream, lam)
    inside = np.asarray(stream.tasks) == task
    return 1000.0 * (START_SHARE * spent[inside].mean() + (1 - START_SHARE) * spent[~inside].mean())


def run_seed(
    stream: Stream,
    scenario: str,
    seed: int,
    *,
    lam: float,
    requests: int,
    window: int,
    exploration: Exploration,
    online: OnlineSettings,
    budget: Budget | None = None,
    expensive_task: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """One seed of a scenario: the stream order (drifting for ``budget``) and its policies."""
    rows = None
    if scenario == "budget":
        if expensive_task is None:
            raise ValueError("the budget scenario needs its expensive task")
        rows = drift_rows(stream.tasks, expensive_task, requests, seed)
    return simulate(
        stream,
        lam=lam,
        requests=requests,
        window=window,
        seed=seed,
        exploration=exploration,
        online=online,
        warm=scenario != "cold",
        cold=scenario == "cold",
        rows=rows,
        budget=budget,
    )
