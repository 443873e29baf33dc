"""Budget targets held while serving: one :class:`BudgetController` per model group, its
per-bucket records shared by every worker and replica through Redis.

    routeiq_settings:
      target: "budget<=0.8"          # USD per 1,000 requests
      hold_budget: {enabled: true}   # re-fit lambda from the recent decisions (shared)

Each decision adds one record to the current bucket (:mod:`routeiq.online.budget`); with
``shared_state`` a sync thread pushes the new records (``HINCRBYFLOAT`` on one hash per group
and bucket, ``PREFIX:budget:GROUP:BUCKET``, expiring after the horizon: one key per command,
so Redis Cluster works) and pulls the last ``horizon`` buckets' totals, so every worker fits
the same lambda from the same spend. Redis down: each worker holds the budget on its own
traffic until it is back (a warning once). Nothing here touches the network on the request
path.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from routeiq.online.budget import CURVE, LAMBDAS, BudgetController
from routeiq.online.store import SharedStateSettings

log = logging.getLogger(__name__)
_WIDTH = CURVE + LAMBDAS.size


class BudgetHoldSettings(BaseModel):
    """``hold_budget:``: keep a ``budget<=`` target while the request mix drifts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="re-fit lambda online for budget targets")
    bucket_s: float = Field(default=60.0, gt=0, description="seconds one spend record covers")
    horizon: int = Field(default=10, ge=1, description="recent buckets the fit uses")
    min_requests: int = Field(
        default=100, ge=1, description="decisions in the horizon before lambda moves"
    )
    sync_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="push and pull the shared records this often"
    )


class BudgetHolds:
    """The budget controllers of an engine, by group (and experiment variant)."""

    def __init__(
        self,
        shared: SharedStateSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        client: Any = None,
    ) -> None:
        self.shared = shared
        self.clock = clock
        self.healthy = True
        self._client = client
        self._controllers: dict[str, tuple[BudgetController, BudgetHoldSettings]] = {}
        self._unpushed: dict[str, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the request path ------------------------------------------------------------------

    def lam(self, key: str, usd_per_1k: float, lam0: float, hold: BudgetHoldSettings) -> float:
        """The lambda that holds ``usd_per_1k`` for ``key`` now (``lam0`` until it knows)."""
        with self._lock:
            entry = self._controllers.get(key)
            if entry is None or entry[0].target != usd_per_1k or entry[1] != hold:
                controller = BudgetController(
                    usd_per_1k,
                    lam=lam0,
                    clock=self.clock,
                    bucket=hold.bucket_s,
                    horizon=hold.horizon,
                    min_requests=hold.min_requests,
                )
                self._controllers[key] = (controller, hold)
                entry = (controller, hold)
            value = entry[0].lam()
        if self.shared is not None:
            self._ensure_thread(hold.sync_interval_s)
        return value

    def observe(self, key: str, quality: Any, cost: Any, spent: float | None) -> None:
        """Record one decision of ``key`` (the candidates' predicted quality and cost)."""
        with self._lock:
            entry = self._controllers.get(key)
            if entry is None:
                return
            controller, hold = entry
            bucket = str(math.floor(self.clock() / hold.bucket_s))
            record = controller.record(quality, cost, spent, controller.lam())
            controller.merge({bucket: record})
            if self.shared is not None:
                pending = self._unpushed.setdefault(key, {})
                pending[bucket] = pending[bucket] + record if bucket in pending else record

    # -- sharing ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            assert self.shared is not None
            self._client = self.shared.connect()
        return self._client

    def _key(self, key: str, bucket: str) -> str:
        assert self.shared is not None
        return f"{self.shared.prefix}:budget:{key}:{bucket}"

    def _ensure_thread(self, interval: float) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, args=(interval,), name="routeiq-budget-sync", daemon=True
                )
                self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sync()

    def sync(self) -> bool:
        """Push new records, pull the shared totals of every recent bucket; False on error."""
        if self.shared is None:
            return True
        with self._lock:
            unpushed, self._unpushed = self._unpushed, {}
            controllers = dict(self._controllers)
        try:
            self._push(unpushed, controllers)
            for key, (controller, hold) in controllers.items():
                self._pull(key, controller, hold)
        except Exception as exc:
            with self._lock:  # keep them for the next round
                for key, buckets in unpushed.items():
                    mine = self._unpushed.setdefault(key, {})
                    for b, arr in buckets.items():
                        mine[b] = mine[b] + arr if b in mine else arr
            if self.healthy:
                log.warning("RouteIQ budget holds: Redis unreachable (%s); holding locally", exc)
            self.healthy = False
            return False
        if not self.healthy:
            log.warning("RouteIQ budget holds: Redis reachable again; sharing resumed")
        self.healthy = True
        return True

    def _push(self, unpushed: dict[str, dict[str, np.ndarray]], controllers: dict) -> None:
        if not unpushed:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, buckets in unpushed.items():
            hold = controllers[key][1] if key in controllers else BudgetHoldSettings()
            ttl = max(1, math.ceil(hold.bucket_s * (hold.horizon + 2)))
            for bucket, arr in buckets.items():
                name = self._key(key, bucket)
                for i in np.flatnonzero(arr).tolist():
                    pipe.hincrbyfloat(name, str(i), float(arr[i]))
                pipe.expire(name, ttl)
        pipe.execute()

    def _pull(self, key: str, controller: BudgetController, hold: BudgetHoldSettings) -> None:
        now = math.floor(self.clock() / hold.bucket_s)
        buckets = [str(b) for b in range(now - hold.horizon, now + 1)]
        pipe = self.client.pipeline(transaction=False)
        for bucket in buckets:
            pipe.hgetall(self._key(key, bucket))
        totals: dict[str, np.ndarray] = {}
        for bucket, raw in zip(buckets, pipe.execute(), strict=True):
            if not raw:
                continue
            arr = np.zeros(_WIDTH)
            for field, value in raw.items():
                index = int(field)
                if 0 <= index < _WIDTH:
                    arr[index] = float(value)
            totals[bucket] = arr
        with self._lock:
            for bucket, arr in self._unpushed.get(key, {}).items():  # recorded since the push
                totals[bucket] = totals[bucket] + arr if bucket in totals else arr
            controller.load(totals)

    def close(self) -> None:
        """Stop the sync thread after one last round."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.shared is not None and self._controllers:
            self.sync()


def held_target(hold: BudgetHoldSettings, target: Any) -> float | None:
    """USD per 1,000 requests when ``target`` (a string or parsed target) is a budget that
    ``hold`` keeps online; else None."""
    if not hold.enabled or target is None:
        return None
    from routeiq.decision.targets import BudgetTarget, parse_target

    parsed = parse_target(target) if isinstance(target, str) else target
    return parsed.usd_per_1k if isinstance(parsed, BudgetTarget) else None
