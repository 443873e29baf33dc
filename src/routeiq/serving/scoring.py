"""Featurize + score one request: inline on the event loop, or in a bounded thread pool.

    scorer = Scorer(settings)
    scored = await scorer.run(learned, text, candidates, tradeoff, online)  # TimeoutError

``scoring: auto`` runs inline when the router's featurizer is known to be sub-millisecond
(lexical: a thread hop would cost a turn of a busy loop), in threads otherwise; a thread job
is bounded by ``decision_timeout_ms``, and one that waited in the queue past its deadline is
skipped (:class:`ScoringExpired`) instead of lengthening the backlog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from routeiq.online.router import OnlineContext, OnlineRouter
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving.overrides import Tradeoff
from routeiq.serving.settings import RouteIQSettings


class ScoringExpired(Exception):
    """The scoring job started after its deadline (queue backlog): skipped."""


class Scored(NamedTuple):
    resolved: Any  # ResolvedCandidates: quality and cost per candidate
    lam: float
    rule: str | None
    seconds: float
    online: OnlineContext | None
    opening: Any  # the conversation's opening turn scored the same way (sticky), or None


def score(
    learned: LearnedRouter,
    text: str,
    candidates: Sequence[Candidate],
    tradeoff: Tradeoff,
    deadline: float | None,
    online: OnlineRouter | None = None,
    opening: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> Scored:
    """The scoring job (a thread's or the loop's)."""
    if deadline is not None and time.monotonic() > deadline:
        raise ScoringExpired
    started = time.perf_counter()
    lam, rule = learned.tradeoff(tradeoff.lam, tradeoff.target)
    resolved, octx = learned.score_online(text, candidates, online, context)
    first = (
        None if opening is None else learned.score_online(opening, candidates, online, context)[0]
    )
    return Scored(resolved, lam, rule, time.perf_counter() - started, octx, first)


class Scorer:
    """Where scoring runs, under one engine's settings; threads start on first use."""

    def __init__(self, settings: RouteIQSettings) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(
            max_workers=settings.threads, thread_name_prefix="routeiq-score"
        )

    async def run(
        self,
        learned: LearnedRouter,
        text: str,
        cands: Sequence[Candidate],
        tradeoff: Tradeoff,
        online: OnlineRouter | None,
        opening: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Scored:
        mode = self.settings.scoring
        inline = mode == "inline" or (
            mode == "auto" and getattr(learned.featurizer, "inline_safe", False)
        )
        if tradeoff.target is not None and not learned.is_calibrated(tradeoff.target):
            inline = False  # a new client target calibrates for milliseconds: off the loop
        if inline:
            return score(learned, text, cands, tradeoff, None, online, opening, context)
        timeout = self.settings.decision_timeout_ms / 1000.0
        deadline = time.monotonic() + timeout
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, score, learned, text, cands, tradeoff, deadline, online, opening, context
        )
        return await asyncio.wait_for(future, timeout)

    def close(self) -> None:
        """Stop the threads (in-flight scores finish, queued ones are cancelled)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
