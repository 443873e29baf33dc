"""Guards in the engine: hard exclusions before the decision, refusals, outcome observers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from routeiq.router import Candidate
from routeiq.serving import NoCandidatesError, RouteRequest
from routeiq.serving.guards import GuardRefusal, Outcome

CODE = "Write a Python function that computes the median of a list, with tests."
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))


def request(**kwargs: Any) -> RouteRequest:
    kwargs.setdefault("candidates", CANDS)
    return RouteRequest(group="chat", messages=[{"role": "user", "content": CODE}], **kwargs)


class Block:
    def __init__(self, *names: str, reason: str = "circuit open") -> None:
        self.names, self.reason = set(names), reason
        self.seen: list[RouteRequest] = []
        self.closed = False

    def exclude(self, request: RouteRequest, candidates: Sequence[Candidate]) -> Mapping[str, str]:
        self.seen.append(request)
        return {c.name: self.reason for c in candidates if c.name in self.names}

    def close(self) -> None:
        self.closed = True


class Watch:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


async def test_an_excluded_candidate_is_never_chosen_and_named(make_engine):
    engine = make_engine(guards=[Block("strong")])
    d = await engine.decide(request())
    assert d.chosen == "cheap"  # the code prompt would go to strong
    strong = next(r for r in d.candidates if r.name == "strong")
    assert strong.available is False and strong.excluded == "circuit open"
    assert "; excluded strong" in d.rule and "retry" not in d.rule


async def test_exclusions_are_hard_where_retries_are_soft(make_engine):
    engine = make_engine(guards=[Block("strong")])
    # cheap failed earlier, strong is excluded: the retry goes back to cheap, never strong.
    d = await engine.decide(request(failed={"cheap": "retry: failed"}, attempt=2))
    assert d.chosen == "cheap"
    with pytest.raises(NoCandidatesError, match="strong: circuit open; cheap: circuit open"):
        await make_engine(guards=[Block("strong", "cheap")]).decide(request())


@pytest.mark.parametrize("mode", ["cheapest", "shuffle"])
async def test_exclusions_apply_in_every_mode_and_to_pinned_requests(make_engine, mode):
    engine = make_engine({"mode": mode}, guards=[Block("cheap")])
    for _ in range(10):
        assert (await engine.decide(request())).chosen == "strong"
    with pytest.raises(NoCandidatesError):
        await engine.decide(request(candidates=CANDS[1:], pinned=True))


async def test_a_refusal_propagates_and_a_broken_guard_fails_open(make_engine, caplog):
    class Refuse:
        def exclude(self, request, candidates):
            raise GuardRefusal("policy forbids")

    class Broken:
        def exclude(self, request, candidates):
            raise KeyError("bug")

    with pytest.raises(GuardRefusal, match="policy forbids"):
        await make_engine(guards=[Refuse()]).decide(request())
    with caplog.at_level(logging.ERROR):
        d = await make_engine(guards=[Broken(), Block("strong")]).decide(request())
    assert d.chosen == "cheap" and "Broken failed" in caplog.text


async def test_filters_see_the_request_and_observers_every_outcome(make_engine):
    block, watch = Block(), Watch()
    engine = make_engine(guards=[block, watch])
    d = await engine.decide(request(tags=("batch",), stream=True, input_tokens=12))
    assert block.seen[0].tags == ("batch",) and block.seen[0].stream is True
    engine.record_outcome(
        d.id,
        group="chat",
        deployment=d.chosen,
        model=d.model,
        status="failure",
        error_type="InternalServerError",
    )
    assert watch.outcomes == [
        Outcome(d.id, "chat", d.chosen, d.model, "failure", None, "InternalServerError")
    ]
    engine.close()
    assert block.closed


async def test_a_fail_closed_guard_that_breaks_refuses_the_request(make_engine, caplog):
    class Policy:
        fail_closed = True

        def exclude(self, request, candidates):
            raise KeyError("bug")

    with caplog.at_level(logging.ERROR), pytest.raises(GuardRefusal, match="could not check"):
        await make_engine(guards=[Policy()]).decide(request())
    assert "request refused" in caplog.text
