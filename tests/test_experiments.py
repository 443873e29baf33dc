"""A/B experiments: sticky assignment, the mSPRT's guarantees, and the report CLI."""

from __future__ import annotations

import hashlib
import json
import math
import random

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from routeiq.data.records import read_records
from routeiq.experiments import (
    ArmStats,
    Experiment,
    ExperimentSettings,
    MixtureSPRT,
    analyze,
    bucket,
    msprt,
    split_label,
)

runner = CliRunner()
UNITS = [f"user-{i}" for i in range(20_000)]


def settings(*weights: float, slots: int = 2, **extra) -> ExperimentSettings:
    """Control first, then variants t1, t2, ... with the given weights (control takes the rest)."""
    variants = [{"name": "control", "weight": 100 - sum(weights), "control": True}]
    variants += [{"name": f"t{i}", "weight": w} for i, w in enumerate(weights, 1)]
    return ExperimentSettings.model_validate(
        {"name": "exp", "salt": "s1", "unit": "user", "slots": slots, "variants": variants, **extra}
    )


def assignments(exp: Experiment) -> list[str]:
    return [exp.assign(u) for u in UNITS]


# -- assignment ------------------------------------------------------------------------------


def test_bucket_is_sha256_of_salt_nul_unit_in_every_process() -> None:
    # Computed independently, and pinned: a change here would re-bucket every live experiment.
    salt, unit = "router-v2-2024", "alice"
    digest = hashlib.sha256(salt.encode("utf-8") + b"\0" + unit.encode("utf-8")).digest()
    assert bucket("router-v2-2024", "alice") == int.from_bytes(digest[:8], "big") % 10_000
    assert bucket("router-v2-2024", "alice") == 3361
    assert bucket("router-v2-2024", "bob") == 9757
    assert bucket("s", "ünï") == 4807  # UTF-8
    assert bucket("a", "bc") != bucket("ab", "c")  # the separator keeps fields apart


def test_distribution_matches_weights() -> None:
    exp = Experiment(settings(20, 10, slots=4))
    got = assignments(exp)
    for name, pct in (("control", 70), ("t1", 20), ("t2", 10)):
        p, n = pct / 100, len(UNITS)
        assert abs(got.count(name) - n * p) < 4 * math.sqrt(n * p * (1 - p)), name


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((10,), (30,)),  # raise t1
        ((30,), (5,)),  # lower t1
        ((10,), (10, 25)),  # add t2
        ((10, 25), (40, 25)),  # raise t1 with t2 present
        ((40, 25), (40, 0)),  # retire t2
        ((0,), (50,)),  # start from nothing, up to a full slot
    ],
)
def test_weight_changes_move_units_only_to_or_from_control(before, after) -> None:
    old, new = assignments(Experiment(settings(*before))), assignments(Experiment(settings(*after)))
    moves = {(a, b) for a, b in zip(old, new, strict=True) if a != b}
    allowed = set()
    for i, (w0, w1) in enumerate(zip((*before, 0), (*after, 0), strict=False), 1):
        if w1 > w0:
            allowed.add(("control", f"t{i}"))
        elif w1 < w0:
            allowed.add((f"t{i}", "control"))
    assert moves and moves <= allowed, moves
    # Each variant gains or loses about its weight change (binomial noise).
    for i, (w0, w1) in enumerate(zip((*before, 0), (*after, 0), strict=False), 1):
        moved = sum(1 for a, b in zip(old, new, strict=True) if a != b and f"t{i}" in (a, b))
        assert abs(moved / len(UNITS) - abs(w1 - w0) / 100) < 0.015


def test_explicit_slots_keep_units_when_a_variant_is_removed() -> None:
    def exp(*variants: dict) -> Experiment:
        control = {"name": "control", "weight": 100 - sum(v["weight"] for v in variants)}
        return Experiment(
            ExperimentSettings.model_validate(
                {
                    "name": "e",
                    "salt": "s1",
                    "slots": 4,
                    "variants": [{**control, "control": True}, *variants],
                }
            )
        )

    a, b = {"name": "a", "weight": 20, "slot": 0}, {"name": "b", "weight": 20, "slot": 1}
    old, new = assignments(exp(a, b)), assignments(exp(b))
    assert {(x, y) for x, y in zip(old, new, strict=True) if x != y} == {("a", "control")}


def test_layout_is_documented_regions() -> None:
    exp = Experiment(settings(12.5, 30))
    assert exp.ranges() == {
        "t1": [(0, 1250)],
        "control": [(1250, 5000), (8000, 10_000)],
        "t2": [(5000, 8000)],
    }
    assert exp.label("t1") == "exp/t1" and split_label("exp/t1") == ("exp", "t1")
    assert split_label("t1") == (None, "t1")


def test_missing_unit_goes_to_control_and_is_counted() -> None:
    exp = Experiment(settings(50))
    assert exp.assign(None) == "control" and exp.assign("") == "control"
    assert exp.missing == 2


def test_request_unit_buckets_the_id() -> None:
    exp = Experiment(settings(50, **{"unit": "request"}))
    ids = [f"pid-{i:016x}" for i in range(2000)]
    share = sum(exp.assign(i) == "t1" for i in ids) / len(ids)
    assert 0.44 < share < 0.56
    assert exp.assign(ids[0]) == exp.assign(ids[0])


def arms(*variants: tuple) -> dict:
    """``("c", 50, {"control": True}), ("t", 50)`` -> a settings ``variants`` list."""
    return {
        "variants": [
            {"name": v[0], "weight": v[1], **(v[2] if len(v) > 2 else {})} for v in variants
        ]
    }


CONTROL = {"control": True}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (arms(("control", 60, CONTROL), ("t", 30)), "sum to 100, got 90 \\(control 60 \\+ t 30\\)"),
        (arms(("a", 50), ("b", 50)), "exactly one variant must have control"),
        (arms(("a", 50, CONTROL), ("a", 50)), "unique; repeated: a"),
        (arms(("c", 40, CONTROL), ("t", 60)), "exceeds its slot"),
        ({"salt": ""}, "salt"),
        ({"unit": "tenant"}, "unit"),
        ({"slots": 0}, "slots"),
        ({"saltt": "x"}, "Extra inputs are not permitted"),
        (arms(("c", 50, CONTROL), ("t", 50, {"lamda": 3})), "lamda"),
        (arms(("c", 50, CONTROL), ("t", 50, {"mode": "fastest"})), "mode"),
        (arms(("c", 50, CONTROL), ("t/x", 50)), "pattern"),
        (arms(("c", 50, CONTROL), ("t", 50, {"lambda": 1, "target": "quality>=0.9"})), "not both"),
        (arms(("c", 50, CONTROL), ("t", 50, {"target": "fast"})), "cannot parse target"),
        (arms(("c", 40, CONTROL), ("a", 30), ("b", 30, {"slot": 0})), "share slot 0"),
        (arms(("c", 50, {"control": True, "slot": 1}), ("t", 50)), "no slot"),
        ({"slots": 1, **arms(("c", 40, CONTROL), ("a", 30), ("b", 30))}, "slots is 1"),
    ],
)
def test_settings_errors_are_clear(change, message) -> None:
    variants = [{"name": "c", "weight": 50, "control": True}, {"name": "t", "weight": 50}]
    base = {"name": "exp", "salt": "s", "variants": variants}
    with pytest.raises(ValidationError, match=message):
        ExperimentSettings.model_validate({**base, **change})


def test_variant_settings_accept_what_a_variant_changes() -> None:
    s = ExperimentSettings.model_validate(
        {
            "name": "exp",
            "salt": "s",
            "variants": [
                {"name": "control", "weight": 50, "control": True, "mode": "shuffle"},
                {"name": "cheap", "weight": 25, "lambda": "inf"},
                {"name": "learned", "weight": 25, "router": "./r", "lam": 20, "exploration": {}},
            ],
        }
    )
    assert s.control.mode == "shuffle"
    assert s.variant("cheap").lam == math.inf and s.variant("learned").lam == 20


# -- the mSPRT -------------------------------------------------------------------------------


def test_known_values_by_hand() -> None:
    # n = 100 per arm, means 0 and 0.5, variances 1, tau^2 = 1: V = 1/100 + 1/100 = 0.02.
    v, t2, d = 0.02, 1.0, 0.5
    lam = math.sqrt(v / (v + t2)) * math.exp(t2 * d**2 / (2 * v * (v + t2)))
    half = math.sqrt(2 * v * (v + t2) / t2 * (math.log(1 / 0.05) + 0.5 * math.log((v + t2) / v)))
    look = MixtureSPRT(0.05, tau2=1.0).update(ArmStats(100, 0.0, 1.0), ArmStats(100, 0.5, 1.0))
    assert lam == pytest.approx(64.17, rel=1e-3)  # sqrt(0.02/1.02) * exp(0.25 / 0.0408)
    assert look.p_value == pytest.approx(1 / lam)
    assert (look.low, look.high) == pytest.approx((d - half, d + half))
    assert look.rejected and half == pytest.approx(0.4499, rel=1e-3)
    # Standardised tau: tau^2 = 0.1^2 * pooled variance 1 = 0.01.
    std = MixtureSPRT(0.05, tau=0.1).update(ArmStats(100, 0.0, 1.0), ArmStats(100, 0.5, 1.0))
    expected = math.sqrt(0.02 / 0.03) * math.exp(0.01 * 0.25 / (2 * 0.02 * 0.03))
    assert std.p_value == pytest.approx(1 / expected)


def _simulate(experiments, looks, every, mean_c, mean_t, draw, seed):
    """Cumulative (n, mean, var) per arm at each look, a fair coin per request."""
    rng = np.random.default_rng(seed)
    cols = {k: np.zeros((experiments, looks)) for k in ("nc", "sc", "qc", "nt", "st", "qt")}
    acc = {k: np.zeros(experiments) for k in cols}
    for look in range(looks):
        arm = rng.random((experiments, every)) < 0.5
        x = draw(rng, (experiments, every)) + np.where(arm, mean_t, mean_c)
        for side, mask in (("t", arm), ("c", ~arm)):
            acc["n" + side] += mask.sum(1)
            acc["s" + side] += np.where(mask, x, 0).sum(1)
            acc["q" + side] += np.where(mask, x * x, 0).sum(1)
        for k in cols:
            cols[k][:, look] = acc[k]
    out = []
    for side in "ct":
        n, s, q = cols["n" + side], cols["s" + side], cols["q" + side]
        mean = s / n
        out += [n, mean, (q - s * mean) / (n - 1)]
    return out


NORMAL = lambda rng, size: rng.normal(0.0, 1.0, size)  # noqa: E731
LOGNORMAL = lambda rng, size: rng.lognormal(0.0, 1.0, size)  # noqa: E731 (skewed, as latency)
BERNOULLI = lambda rng, size: (rng.random(size) < 0.7).astype(float)  # noqa: E731


@pytest.mark.parametrize(
    "draw", [NORMAL, LOGNORMAL, BERNOULLI], ids=["normal", "lognormal", "bernoulli"]
)
def test_false_positive_rate_under_continuous_monitoring(draw) -> None:
    # 400 A/A experiments, a look every 100 requests for 30 looks.
    runs = 400
    res = msprt(*_simulate(runs, 30, 100, 0.0, 0.0, draw, seed=1))
    fpr = res.rejected.any(axis=1).mean()
    assert fpr <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / runs), fpr
    covered = ((res.low <= 0) & (res.high >= 0)).all(axis=1).mean()
    assert covered >= 0.95 - 2.5 * math.sqrt(0.05 * 0.95 / runs)


def test_rejects_a_real_difference() -> None:
    res = msprt(*_simulate(100, 30, 100, 0.0, 0.25, NORMAL, seed=2))  # a quarter sd
    assert res.rejected[:, -1].mean() > 0.9
    assert (res.difference[:, -1] > 0).all()
    assert (res.low[res.rejected] > 0).all()  # the sequence excludes zero on the right side


def test_p_values_are_monotone_and_intervals_nested() -> None:
    res = msprt(*_simulate(50, 30, 100, 0.0, 0.1, BERNOULLI, seed=3))
    assert (np.diff(res.p_value, axis=1) <= 0).all()
    assert (np.diff(res.low, axis=1) >= 0).all() and (np.diff(res.high, axis=1) <= 0).all()
    assert ((res.p_value <= 0.05) == ((res.low > 0) | (res.high < 0))).all()


def test_incremental_class_matches_the_vectorised_test() -> None:
    cols = [c[0] for c in _simulate(1, 20, 100, 0.0, 0.2, NORMAL, seed=4)]
    res = msprt(*cols)
    test = MixtureSPRT()
    for k in range(20):
        look = test.update(
            ArmStats(int(cols[0][k]), cols[1][k], cols[2][k]),
            ArmStats(int(cols[3][k]), cols[4][k], cols[5][k]),
        )
        assert look.p_value == pytest.approx(res.p_value[k])
        assert (look.low, look.high) == pytest.approx((res.low[k], res.high[k]))
    assert test.n_looks_ == 20 and test.reset().p_value_ == 1.0


def test_too_few_or_constant_observations_carry_no_evidence() -> None:
    early = MixtureSPRT(min_n=30).update(ArmStats(10, 0.0, 1.0), ArmStats(10, 5.0, 1.0))
    assert early.p_value == 1.0 and early.low == -math.inf and early.high == math.inf
    flat = MixtureSPRT().update(ArmStats(50, 1.0, 0.0), ArmStats(50, 1.0, 0.0))
    assert flat.p_value == 1.0 and not flat.rejected
    # No errors yet in either arm: the Bernoulli variance is not zero, so the interval is wide.
    none = MixtureSPRT().update(ArmStats.bernoulli(200, 0), ArmStats.bernoulli(200, 0))
    assert none.low < 0 < none.high
    assert ArmStats.of([1.0, 2.0, 3.0]) == ArmStats(3, 2.0, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        MixtureSPRT(alpha=1.5)
    with pytest.raises(ValueError, match="tau"):
        MixtureSPRT(tau=0)


# -- the report ------------------------------------------------------------------------------


def _decision(rid, variant, model, attempt=1, group="chat"):
    return {
        "id": rid,
        "decision": {
            "chosen": model,
            "propensity": 1.0,
            "attempt": attempt,
            "variant": variant,
            "group": group,
        },
    }


def write_log(path, n=4000, seed=0, experiment="exp", group="chat"):
    """Control (gpt-big) vs cheap (gpt-small): cost halves, quality and errors equal.

    2% of first attempts fail; half of those are retried successfully, so 1% of requests end
    in an error. Feedback (quality 1 w.p. 0.7) arrives for ~60% of requests as later lines.
    """
    rng = random.Random(seed)
    lines, feedback = [], []
    for i in range(n):
        variant = "control" if rng.random() < 0.5 else "cheap"
        model = "gpt-big" if variant == "control" else "gpt-small"
        label = f"{experiment}/{variant}" if experiment else variant
        base = 0.002 if variant == "control" else 0.001
        rid = f"{experiment}-{i}"
        answered = rid
        ok = {"status": "success", "cost": base * rng.uniform(0.5, 1.5)}
        ok["latency_ms"] = rng.lognormvariate(6, 0.5)
        if rng.random() < 0.02:
            failed = {"status": "failure", "error_type": "RateLimitError"}
            lines.append({**_decision(rid, label, model, group=group), "outcomes": {model: failed}})
            if rng.random() < 0.5:
                answered = rid + "-retry"
                retry = _decision(answered, label, model, 2, group)
                lines.append({**retry, "outcomes": {model: ok}})
            else:
                answered = None
        else:
            lines.append({**_decision(rid, label, model, group=group), "outcomes": {model: ok}})
        if answered and rng.random() < 0.6:
            quality = float(rng.random() < 0.7)
            feedback.append({"id": answered, "outcomes": {model: {"quality": quality}}})
    lines.append({"id": "no-experiment", "decision": {"chosen": "gpt-big", "propensity": 1.0}})
    with open(path, "a") as f:
        for line in lines + feedback:
            f.write(json.dumps(line) + "\n")
    return path


def test_report_finds_the_cheaper_variant_and_no_quality_difference(tmp_path) -> None:
    report = analyze(read_records(write_log(tmp_path / "log.jsonl")))
    assert report.experiment == "exp" and report.control == "control"
    assert report.without_variant == 1 and report.looks in (40, 41)
    control, cheap = report.variants["control"], report.variants["cheap"]
    assert control.requests + cheap.requests == 4000
    assert control.attempts > control.requests  # retries are attempts, not requests
    for v in (control, cheap):
        assert v.errors + v.completed == v.requests and v.no_outcome == 0
        assert 0.0 < v.error_rate < 0.03
        assert v.quality_coverage == pytest.approx(0.6, abs=0.05)
        assert v.latency_p50_ms < v.latency_p95_ms
    assert cheap.mean_cost == pytest.approx(control.mean_cost / 2, rel=0.05)
    verdicts = {m: c.verdict for m, c in report.comparisons["cheap"].items()}
    assert verdicts == {
        "error_rate": "no difference yet",
        "cost": "better",
        "latency_ms": "no difference yet",
        "quality": "no difference yet",
    }
    cost = report.comparisons["cheap"]["cost"]
    assert cost.low < cost.difference < cost.high < 0 and cost.p_value <= 0.05


def test_a_request_errors_when_its_last_attempt_fails(tmp_path) -> None:
    fail = {"m": {"status": "failure"}}
    ok = {"m": {"status": "success", "cost": 1.0}}
    lines = [
        {**_decision("a1", "control", "m"), "outcomes": fail},  # retried and answered
        {**_decision("a2", "control", "m", 2), "outcomes": ok},
        {**_decision("b1", "control", "m"), "outcomes": fail},  # retried, failed again
        {**_decision("b2", "control", "m", 2), "outcomes": fail},
        {**_decision("c1", "control", "m"), "outcomes": fail},  # not retried
        {**_decision("d1", "control", "m"), "outcomes": {"m": {"status": "ok"}}},
        {**_decision("e1", "control", "m")},  # no outcome ever arrived
        {**_decision("t1", "treatment", "m"), "outcomes": ok},
    ]
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = analyze(read_records(path))
    control = report.variants["control"]
    assert (control.requests, control.attempts) == (5, 7)
    assert (control.errors, control.completed, control.no_outcome) == (2, 2, 1)
    assert control.error_rate == pytest.approx(0.5)
    assert control.mean_cost == 1.0  # the answering attempt's cost only


def test_filters_by_experiment_and_group(tmp_path) -> None:
    path = write_log(tmp_path / "log.jsonl", n=400, experiment="exp")
    write_log(path, n=300, seed=1, experiment="other", group="embed")
    records = read_records(path)
    with pytest.raises(ValueError, match="several experiments"):
        analyze(records)
    report = analyze(records, experiment="other")
    assert report.records >= 300 and report.filtered >= 400
    assert report.variants["control"].requests + report.variants["cheap"].requests == 300
    assert analyze(records, experiment="exp", group="chat").records >= 400
    with pytest.raises(ValueError, match="no records with a variant in group"):
        analyze(records, experiment="exp", group="embed")
    with pytest.raises(ValueError, match="no records of experiment 'nope'"):
        analyze(records, experiment="nope")


def test_cli_report_json_and_plot(tmp_path) -> None:
    from routeiq.cli.experiment import experiment_app

    log, png = write_log(tmp_path / "log.jsonl"), tmp_path / "plot" / "ab.png"
    result = runner.invoke(
        experiment_app, ["report", "--log", str(log), "--json", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["comparisons"]["cheap"]["cost"]["verdict"] == "better"
    assert out["comparisons"]["cheap"]["quality"]["verdict"] == "no difference yet"
    assert out["variants"]["control"]["requests"] > 1900 and out["without_variant"] == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = runner.invoke(experiment_app, ["report", "--log", str(log), "--group", "chat"])
    assert table.exit_code == 0, table.output
    assert "better" in table.output and "no difference yet" in table.output


def test_cli_bad_inputs_exit_2_with_a_clear_message(tmp_path) -> None:
    from routeiq.cli.experiment import experiment_app

    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "decision": {"chosen": "m", "propensity": 1}}) + "\n")
    log = write_log(tmp_path / "log.jsonl", n=300)
    cases = [
        (["--log", str(plain)], "no decision in the log has a variant"),
        (["--log", str(log), "--control", "baseline"], "no control variant 'baseline'"),
        (["--log", str(log), "--experiment", "nope"], "no records of experiment 'nope'"),
        (["--log", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
    ]
    for args, message in cases:
        result = runner.invoke(experiment_app, ["report", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
