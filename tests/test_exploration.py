"""Safe exploration: probabilities, eligibility, reproducible draws, the logged propensity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from routeiq.decision.exploration import Exploration, draw, sample
from routeiq.decision.rules import decide

NAMES, MODELS = ["a", "b", "c"], ["m-a", "m-b", "m-c"]


def test_off_is_the_greedy_one_hot() -> None:
    p = Exploration().probabilities([0.8, 0.79, 0.1], [1e-3, 1e-4, 1e-5], greedy=0)
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])
    d = decide(NAMES, MODELS, [0.8, 0.79, 0.1], [1e-3, 1e-4, 1e-5], 0.0, exploration=Exploration())
    assert d.chosen == "a" and d.propensity == 1.0 and d.greedy is None


def test_epsilon_spreads_only_over_the_eligible() -> None:
    policy = Exploration(mode="epsilon", epsilon=0.1, margin=0.05, max_cost_ratio=2.0)
    # b: within the margin and cheaper; c: far below; d: close but 3x the greedy cost.
    util, cost = [0.80, 0.78, 0.50, 0.79], [1e-3, 2e-4, 1e-5, 3e-3]
    p = policy.probabilities(util, cost, greedy=0)
    np.testing.assert_allclose(p, [0.9, 0.1, 0.0, 0.0])
    both = Exploration(mode="epsilon", epsilon=0.1, margin=0.05, max_cost_ratio=4.0)
    np.testing.assert_allclose(both.probabilities(util, cost, greedy=0), [0.9, 0.05, 0, 0.05])
    # Unavailable (failed earlier) and unknown-utility candidates are never explored.
    p = policy.probabilities([0.8, 0.79, math.nan], [1e-3, 1e-4, 1e-4], 0, [True, False, True])
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])


def test_softmax_favours_higher_utility_within_the_cap() -> None:
    policy = Exploration(mode="softmax", epsilon=0.2, margin=0.1, temperature=0.01)
    p = policy.probabilities([0.80, 0.79, 0.75], [1e-3, 1e-4, 1e-4], greedy=0)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(0.8)
    assert p[1] > p[2] > 0
    assert p[1] / p[2] == pytest.approx(math.exp(4.0))


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="epsilon"):
        Exploration(mode="epsilon", epsilon=0.9)
    with pytest.raises(ValidationError, match="mode"):
        Exploration(mode="thompsn")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_cost_ratio"):
        Exploration(max_cost_ratio=0.5)


def test_draw_is_fixed_by_seed_id_and_router() -> None:
    assert draw(0, "id-1", "r1") == draw(0, "id-1", "r1")
    assert (
        len(
            {
                draw(0, "id-1", "r1"),
                draw(1, "id-1", "r1"),
                draw(0, "id-2", "r1"),
                draw(0, "id-1", "r2"),
            }
        )
        == 4
    )
    u = [draw(7, f"id-{i}", None) for i in range(2000)]
    assert min(u) >= 0 and max(u) < 1
    assert abs(np.mean(u) - 0.5) < 0.03


def test_sample_inverts_the_cdf_and_never_picks_zero_probability() -> None:
    p = [0.0, 0.7, 0.0, 0.3]
    assert sample(p, 0.0) == 1
    assert sample(p, 0.69) == 1
    assert sample(p, 0.71) == 3
    assert sample(p, 0.999999999) == 3
    assert sample([0.5, 0.5, 0.0], 1.0 - 1e-17) == 1


def test_decide_logs_the_sampled_choice_with_its_propensity() -> None:
    policy = Exploration(mode="epsilon", epsilon=0.2, margin=0.1, max_cost_ratio=10)
    q, c = [0.80, 0.78, 0.2], [1e-3, 2e-4, 1e-5]
    picks = []
    for i in range(3000):
        d = decide(NAMES, MODELS, q, c, 10.0, exploration=policy, u=draw(0, f"r{i}", None))
        row = d.chosen_row
        assert row is not None and d.propensity == row.probability > 0
        assert d.greedy == "a" and d.explored == (d.chosen != "a")
        assert sum(r.probability for r in d.candidates) == pytest.approx(1.0)
        assert "explore epsilon" in d.rule
        picks.append(d.chosen)
        record = d.to_record()["decision"]
        assert record["greedy"] == "a" and record["propensity"] == d.propensity
    share = picks.count("b") / len(picks)
    assert abs(share - 0.2) < 0.03  # binomial sd ~0.007
    assert "c" not in picks  # 0.6 below the best: outside the margin
