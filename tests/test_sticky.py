"""Sticky conversations: a follow-up turn stays on its opening turn's candidate unless
another beats it by more than the margin; staying is priced from the prompt cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from routeiq.data.prompts import opening_text
from routeiq.router import Candidate
from routeiq.serving import RouteRequest
from routeiq.serving.sticky import stay

CODE = "Write a Python function that computes the median of a list, with tests."
CHATS = ("Thanks! How is your day going?", "Nice. Any weekend plans?", "Cool, see you later!")
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))


def conversation(turns: int) -> list[dict[str, Any]]:
    """A conversation that opens with code, then chats (a cheap model's job on its own)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": CODE}]
    for i in range(turns - 1):
        messages.append({"role": "assistant", "content": f"answer {i}"})
        messages.append({"role": "user", "content": CHATS[i % len(CHATS)]})
    return messages


async def route(engine: Any, turns: int, cands: Any = CANDS) -> Any:
    return await engine.decide(RouteRequest("chat", cands, messages=conversation(turns)))


async def test_follow_up_turns_stay_unless_the_gain_beats_the_margin(make_engine):
    assert (await route(make_engine(), 1)).chosen == "strong"  # the opening: code
    off = make_engine({"sticky": {"enabled": False}})
    assert [(await route(off, t)).chosen for t in (2, 3, 4)] == ["cheap"] * 3  # it bounces
    on = make_engine({"sticky": {"margin": 1.0}})
    decisions = [await route(on, t) for t in (2, 3, 4)]
    assert [d.chosen for d in decisions] == ["strong"] * 3
    assert all("sticky: stayed on strong" in d.rule for d in decisions)
    assert all(d.propensity == 1.0 for d in decisions)
    cheap = next(r for r in decisions[0].candidates if r.name == "cheap")
    assert cheap.excluded == "sticky: the conversation stays on strong"
    tight = make_engine({"sticky": {"margin": 0.0}})
    left = await route(tight, 2)
    assert left.chosen == "cheap" and "sticky: left strong (gain" in left.rule


async def test_staying_is_priced_from_the_prompt_cache(make_engine):
    cached = (Candidate("strong", "gpt-4o", 0.0026, cached_cost=0.0004), CANDS[1])
    d = await route(make_engine({"sticky": {"margin": 1.0}}), 3, cached)
    strong = next(r for r in d.candidates if r.name == "strong")
    assert d.chosen == "strong" and strong.cost == pytest.approx(0.0004)


def test_the_stay_rule():
    q0, c0 = np.array([0.9, 0.5]), np.array([1.0, 0.1])  # the opening chose 0 at lam 0.1
    q, c = np.array([0.6, 0.6]), np.array([1.0, 0.1])  # now 1 is better by 0.09
    st = stay(q0, c0, q, c, [None, None], 0.1, [True, True], margin=0.1)
    assert st is not None and st.index == 0 and st.stays and st.gain == pytest.approx(0.09)
    assert not stay(q0, c0, q, c, [None, None], 0.1, [True, True], margin=0.05).stays
    # With the conversation cached at 0, staying is cheaper: 0 is this turn's best again.
    assert stay(q0, c0, q, c, [0.05, None], 0.1, [True, True], margin=0.0) is None
    # The opening's choice is unavailable now (failed, excluded): nothing to stay on.
    assert stay(q0, c0, q, c, [None, None], 0.1, [False, True], margin=1.0) is None


def test_openings_and_cached_tokens():
    pytest.importorskip("litellm")
    from routeiq.integrations.litellm.deployments import DeploymentTable
    from routeiq.integrations.litellm.request_fields import conversation_tokens

    assert opening_text(conversation(1)) is None and opening_text(conversation(3)) == CODE
    assert conversation_tokens(conversation(1), 100) == 0
    assert 0 < conversation_tokens(conversation(3), 100) < 100
    dep = {
        "model_name": "chat",
        "litellm_params": {
            "model": "gpt-4o",
            "input_cost_per_token": 2.5e-6,
            "output_cost_per_token": 1e-5,
            "cache_read_input_token_cost": 1.25e-6,
        },
        "model_info": {"id": "strong"},
    }
    cand, _ = DeploymentTable().candidate(dep, ["gpt-4o"], 1000, 100, cached_tokens=800)
    assert cand.cost == pytest.approx(1000 * 2.5e-6 + 100 * 1e-5)
    assert cand.cached_cost == pytest.approx(cand.cost - 800 * 1.25e-6)
