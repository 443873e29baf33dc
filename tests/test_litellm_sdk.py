"""RouteIQ on the LiteLLM SDK Router: real Router, mock deployments, real OTel SDK."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map
litellm = pytest.importorskip("litellm", reason="litellm is not installed (pip install .[litellm])")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk missing")
prometheus_client = pytest.importorskip("prometheus_client", reason="prometheus-client missing")

from litellm import Router  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from litellm_helpers import (  # noqa: E402
    CHAT,
    CHEAP_PRICE,
    CODE,
    STRONG_PRICE,
    ask,
    deployment,
    embedding_deployment,
    model_list,
    served,
)
from routeiq.data.records import read_records  # noqa: E402
from routeiq.integrations.litellm import (  # noqa: E402
    DecisionLog,
    RouteIQConfigError,
    RouteIQSettings,
    install,
    is_attached,
    parse_settings,
    uninstall,
)
from routeiq.integrations.litellm.demo import CHEAP, STRONG  # noqa: E402
from routeiq.router import LearnedRouter  # noqa: E402
from routeiq.telemetry.metrics import RouteIQMetrics  # noqa: E402


@pytest.fixture
def tracing() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def setup(demo_artifact: Path, tmp_path: Path, tracing: tuple) -> Any:
    """A Router with RouteIQ installed; yields (router, strategy, exporter, registry, log)."""
    provider, exporter = tracing
    router = Router(model_list=model_list(), num_retries=0, fallbacks=[{"broken": ["backup"]}])
    settings = RouteIQSettings.model_validate(
        {
            "router": demo_artifact,
            "lambda": 20.0,
            "decision_log": tmp_path / "decisions.jsonl",
            "groups": {"backup": {"allow_client_overrides": True}},
        }
    )
    registry = prometheus_client.CollectorRegistry()
    strategy = install(router, settings, metrics=RouteIQMetrics(registry), tracer_provider=provider)
    yield router, strategy, exporter, registry, tmp_path / "decisions.jsonl"
    uninstall(router, strategy)


async def settle(strategy: Any, n: int) -> list:
    """Wait until n records are written (LiteLLM runs success callbacks in the background)."""
    log = strategy.engine.decision_log
    for _ in range(200):
        log.flush()
        if log.path.exists() and len(log.path.read_text().splitlines()) >= n:
            break
        await asyncio.sleep(0.02)
    return [json.loads(line) for line in log.path.read_text().splitlines()]


def decision_spans(exporter: InMemorySpanExporter) -> list:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("route ")]


async def test_decisions_follow_the_router(setup: Any) -> None:
    router, strategy, exporter, registry, _ = setup
    # The router's own view: code -> strong, chit-chat -> cheap at lambda 20.
    learned = next(iter(strategy.engine.registry.all()))
    q_code, q_chat = learned.predict_quality([CODE, CHAT])
    assert q_code[0] - q_code[1] > 0.5 and abs(q_chat[0] - q_chat[1]) < 0.3

    assert served(await ask(router, CODE)) == "strong"
    assert served(await ask(router, CHAT)) == "cheap"
    # Multi-part content: only text parts count; an image part does not change the choice.
    parts = [
        {"type": "text", "text": CODE},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    response = await router.acompletion(model="chat", messages=[{"role": "user", "content": parts}])
    assert served(response) == "strong"

    spans = decision_spans(exporter)
    assert [s.name for s in spans] == ["route chat"] * 3
    attrs = spans[0].attributes
    assert attrs["gen_ai.request.model"] == "chat"
    assert attrs["gen_ai.response.model"] == f"openai/{STRONG}"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["routeiq.chosen.deployment"] == "strong"
    assert attrs["routeiq.router.digest"] == learned.digest
    assert attrs["routeiq.lambda"] == 20.0
    assert attrs["routeiq.decision.outcome"] == "routed"
    assert list(attrs["routeiq.candidates.deployments"]) == ["strong", "cheap"]
    assert attrs["routeiq.predicted_quality"] > 0.5
    assert attrs["routeiq.cost_usd"] > 0
    assert "routeiq.fallback_reason" not in attrs
    for span in spans:  # never the prompt text
        assert not any(CODE[:20] in str(v) or CHAT[:20] in str(v) for v in span.attributes.values())

    records = await settle(strategy, 3)
    first = records[0]
    assert first["prompt"] == CODE
    assert first["decision"]["chosen"] == STRONG
    assert first["decision"]["propensity"] == 1.0
    assert first["decision"]["router"] == learned.digest
    assert {c["deployment"] for c in first["decision"]["candidates"]} == {"strong", "cheap"}
    assert first["outcomes"][STRONG]["status"] == "success"
    assert first["outcomes"][STRONG]["cost"] > 0
    assert first["id"].startswith(f"{os.getpid()}-")
    # The log is valid core-format training data.
    parsed = read_records(strategy.engine.decision_log.path)
    assert [r.decision.chosen for r in parsed] == [STRONG, CHEAP, STRONG]

    count = registry.get_sample_value(
        "routeiq_decisions_total",
        {"model_group": "chat", "deployment": "strong", "outcome": "routed"},
    )
    assert count == 2
    assert (
        registry.get_sample_value(
            "routeiq_decision_duration_seconds_count", {"model_group": "chat"}
        )
        == 3
    )
    assert (
        registry.get_sample_value(
            "routeiq_outcomes_total",
            {"model_group": "chat", "deployment": "cheap", "status": "success"},
        )
        == 1
    )


async def test_cooled_down_deployment_is_never_chosen(demo_artifact: Path, tracing: tuple) -> None:
    # "flaky" is the cheapest gpt-4o, so the router prefers it for code until it fails (429)
    # and LiteLLM cools it down; LiteLLM's retry calls the strategy again, which must now
    # pick among the healthy deployments only, and so must every later request.
    provider, exporter = tracing
    flaky_price = {"input_cost_per_token": 2.4e-6, "output_cost_per_token": 0.9e-5}
    router = Router(
        model_list=[
            deployment("chat", "flaky", STRONG, flaky_price, "litellm.RateLimitError"),
            deployment("chat", "strong", STRONG, STRONG_PRICE),
            deployment("chat", "cheap", CHEAP, CHEAP_PRICE),
        ],
        num_retries=1,
        allowed_fails=0,
        cooldown_time=300,
    )
    strategy = install(
        router,
        RouteIQSettings.model_validate({"router": demo_artifact, "lambda": 20.0}),
        tracer_provider=provider,
    )
    try:
        assert served(await ask(router, CODE)) == "strong"  # after one retry
        healthy = await strategy.healthy("chat", {}, [{"role": "user", "content": CODE}])
        assert {d["model_info"]["id"] for d in healthy} == {"strong", "cheap"}  # cooled down
        chosen = {served(await ask(router, f"{CODE} Variant {i}.")) for i in range(5)}
        assert chosen == {"strong"}
        spans = decision_spans(exporter)
        picks = [s.attributes["routeiq.chosen.deployment"] for s in spans]
        assert picks == ["flaky"] + ["strong"] * 6
        assert spans[1].attributes["routeiq.decision.attempt"] == 2
        for span in spans[1:]:
            assert "flaky" not in span.attributes["routeiq.candidates.deployments"]
    finally:
        uninstall(router, strategy)


async def test_fallback_group_is_routed(setup: Any) -> None:
    router, strategy, exporter, _, _ = setup
    response = await ask(router, CHAT, model="broken")
    assert served(response) == "backup-cheap"  # the fallback hop was routed by RouteIQ
    names = [s.name for s in decision_spans(exporter)]
    assert names == ["route broken", "route backup"]
    records = await settle(strategy, 2)
    by_candidates = {
        tuple(c["deployment"] for c in r["decision"]["candidates"]): r for r in records
    }
    broken = by_candidates[("broken-1",)]
    backup = by_candidates[("backup-strong", "backup-cheap")]
    assert broken["outcomes"][STRONG]["status"] == "failure"
    assert backup["decision"]["chosen"] == CHEAP
    assert backup["outcomes"][CHEAP]["status"] == "success"


async def test_pinned_deployment_is_respected(setup: Any) -> None:
    router, _, exporter, registry, _ = setup
    # The router would send chit-chat to "cheap"; naming a deployment id pins it.
    assert served(await ask(router, CHAT, model="strong")) == "strong"
    span = decision_spans(exporter)[-1]
    assert span.attributes["routeiq.decision.outcome"] == "pinned"
    assert (
        registry.get_sample_value(
            "routeiq_decisions_total",
            {"model_group": "chat", "deployment": "strong", "outcome": "pinned"},
        )
        == 1
    )


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": "   "}], "no routable text: user message 0 is empty"),
        ([{"role": "system", "content": "You are terse."}], "no routable text: no user message"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ],
                }
            ],
            "no routable text: user message 0 has no text parts",
        ),
        ([{"role": "user", "content": "x" * 2_000_001}], "prompt too long: 2,000,001 characters"),
    ],
    ids=["whitespace", "no-user-turn", "image-only", "huge"],
)
async def test_requests_without_routable_text_are_served_by_the_fallback_rule(
    demo_artifact: Path, tracing: tuple, messages: list, expected: str
) -> None:
    provider, exporter = tracing
    router = Router(model_list=model_list(), num_retries=0)
    settings = RouteIQSettings.model_validate(
        {"router": demo_artifact, "max_prompt_chars": 2_000_000}
    )
    registry = prometheus_client.CollectorRegistry()
    strategy = install(router, settings, metrics=RouteIQMetrics(registry), tracer_provider=provider)
    try:
        response = await router.acompletion(model="chat", messages=messages)
        assert served(response) == "cheap"  # the cheapest healthy deployment
        attrs = decision_spans(exporter)[-1].attributes
        assert attrs["routeiq.decision.outcome"] == "fallback"
        assert attrs["routeiq.fallback_reason"].startswith(expected)
        labels = {"model_group": "chat", "reason": expected.split(":")[0]}
        assert registry.get_sample_value("routeiq_fallbacks_total", labels) == 1
    finally:
        uninstall(router, strategy)


async def test_client_overrides_only_where_allowed(setup: Any) -> None:
    router, _, exporter, _, _ = setup
    # "backup" allows overrides: "cheapest" sends even code to the cheap deployment.
    response = await ask(router, CODE, model="backup", metadata={"routeiq": "cheapest"})
    assert served(response) == "backup-cheap"
    response = await ask(router, CODE, model="backup", metadata={"routeiq": {"lambda": 0}})
    assert served(response) == "backup-strong"
    with pytest.raises(litellm.BadRequestError, match=r"invalid metadata\.routeiq override"):
        await ask(router, CODE, model="backup", metadata={"routeiq": {"lambda": -1}})
    # "chat" does not: the override is ignored (and the span says so).
    response = await ask(router, CODE, model="chat", metadata={"routeiq": "cheapest"})
    assert served(response) == "strong"
    assert decision_spans(exporter)[-1].attributes["routeiq.override"] == "ignored"


class SlowRouter(LearnedRouter):
    """A router that takes far longer than the decision timeout."""

    def score_online(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return super().score_online(*args, **kwargs)


async def test_slow_router_falls_back_to_cheapest_without_blocking(
    demo_artifact: Path, tracing: tuple
) -> None:
    provider, exporter = tracing
    slow = LearnedRouter.load(demo_artifact)
    slow.__class__ = SlowRouter
    router = Router(model_list=model_list(), num_retries=0)
    settings = RouteIQSettings.model_validate(
        {"lambda": 20.0, "decision_timeout_ms": 20, "scoring": "thread"}
    )
    strategy = install(router, settings, default_router=slow, tracer_provider=provider)
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        response = await ask(router, CODE)
        task.cancel()
        assert served(response) == "cheap"  # the router would have said "strong"
        attrs = decision_spans(exporter)[-1].attributes
        assert attrs["routeiq.decision.outcome"] == "fallback"
        assert attrs["routeiq.fallback_reason"].startswith("timeout")
        assert ticks > 0  # the event loop kept running while the router was busy
    finally:
        uninstall(router, strategy)


def test_sync_completion_is_routed(demo_artifact: Path) -> None:
    router = Router(model_list=model_list(), num_retries=0)
    strategy = install(
        router, RouteIQSettings.model_validate({"router": demo_artifact, "lambda": 20.0})
    )
    try:
        reply = router.completion(model="chat", messages=[{"role": "user", "content": CODE}])
        assert reply._hidden_params["model_id"] == "strong"
    finally:
        uninstall(router, strategy)


def test_install_is_per_router_instance(demo_artifact: Path) -> None:
    one, two = Router(model_list=model_list()), Router(model_list=model_list())
    strategy = install(one, RouteIQSettings.model_validate({"router": demo_artifact}))
    try:
        assert is_attached(one, strategy)
        assert not is_attached(two, strategy)
        assert "async_get_available_deployment" not in vars(two)
    finally:
        uninstall(one, strategy)
    assert not is_attached(one, strategy)


def test_config_errors_are_clear(demo_artifact: Path, tmp_path: Path) -> None:
    router = Router(model_list=model_list())
    with pytest.raises(RouteIQConfigError, match=r"router artifact not found: .*nowhere"):
        install(router, RouteIQSettings.model_validate({"router": tmp_path / "nowhere"}))
    with pytest.raises(RouteIQConfigError, match=r"routeiq_settings.lambda: .*greater than"):
        parse_settings({"router": str(demo_artifact), "lambda": -3})
    with pytest.raises(RouteIQConfigError, match=r"groups.chat.lamda: Extra inputs"):
        parse_settings({"groups": {"chat": {"lamda": 3}}})
    with pytest.raises(RouteIQConfigError, match="cannot parse target"):
        parse_settings({"target": "quality is great"})
    with pytest.raises(RouteIQConfigError, match="mode 'route' but has no router artifact"):
        install(router, RouteIQSettings.model_validate({"router": "none"}))
    odd = Router(
        model_list=[
            deployment("odd", "o1", "mystery-model-a", STRONG_PRICE),
            deployment("odd", "o2", "mystery-model-b", CHEAP_PRICE),
        ]
    )
    with pytest.raises(RouteIQConfigError, match="none of its deployments maps"):
        install(odd, RouteIQSettings.model_validate({"router": demo_artifact, "strict": True}))
    named = Router(
        model_list=[
            {
                **deployment("x", "x1", STRONG, STRONG_PRICE),
                "model_info": {"id": "x1", "routeiq_model": "gpt-9"},
            }
        ]
    )
    with pytest.raises(RouteIQConfigError, match="routeiq_model='gpt-9'"):
        install(named, RouteIQSettings.model_validate({"router": demo_artifact}))
    with pytest.raises(RouteIQConfigError, match="digest"):
        install(
            router,
            RouteIQSettings.model_validate({"router": demo_artifact, "router_digest": "0" * 64}),
        )


def test_tampered_artifact_is_refused(demo_artifact: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "router"
    shutil.copytree(demo_artifact, copy)
    victim = next(p for p in sorted(copy.iterdir()) if p.suffix == ".npz")
    victim.write_bytes(victim.read_bytes()[:-8] + b"tampered")
    with pytest.raises(RouteIQConfigError, match="failed to load or verify"):
        install(Router(model_list=model_list()), RouteIQSettings.model_validate({"router": copy}))


def test_decision_log_expires_pending_decisions(tmp_path: Path) -> None:
    now = [0.0]
    log = DecisionLog(tmp_path / "d.jsonl", pending_ttl_s=10, clock=lambda: now[0])
    decision = {"candidates": [{"model": "m"}], "chosen": "m", "propensity": 1.0}
    log.add_decision({"id": "a", "prompt": "hello", "decision": decision})
    now[0] = 11.0
    log.add_decision({"id": "b", "prompt": "hello again", "decision": decision})
    assert log.flush_expired() == 1 and log.flush()
    assert [r.id for r in read_records(tmp_path / "d.jsonl")] == ["a"]  # a expired unjoined
    assert log.add_outcome("b", {"cost": 0.1, "latency_ms": 5.0, "status": "success"})
    assert not log.add_outcome("zzz", {"status": "success"})
    log.close()
    records = {r.id: r for r in read_records(tmp_path / "d.jsonl")}
    assert records["b"].outcomes["m"].cost == 0.1
    assert records["a"].outcomes == {}


async def test_unmapped_groups_are_served_by_the_shuffle_rule(
    demo_artifact: Path, tracing: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    provider, exporter = tracing
    router = Router(
        model_list=[
            *model_list(),
            deployment("odd", "o1", "mystery-model-a", STRONG_PRICE, "a"),
            deployment("odd", "o2", "mystery-model-b", CHEAP_PRICE, "b"),
            embedding_deployment("embed", "e1"),
        ]
    )
    with caplog.at_level("WARNING", logger="routeiq"):
        strategy = install(
            router,
            RouteIQSettings.model_validate({"router": demo_artifact, "lambda": 20.0}),
            tracer_provider=provider,
            rng=__import__("random").Random(0),
        )
    try:
        warnings = [r.getMessage() for r in caplog.records if "shuffle rule" in r.getMessage()]
        assert len(warnings) == 1 and "'embed'" in warnings[0] and "'odd'" in warnings[0]
        picks = {served(await ask(router, CHAT, model="odd")) for _ in range(12)}
        assert picks == {"o1", "o2"}
        emb = await router.aembedding(model="embed", input=["hello"])
        assert emb._hidden_params["model_id"] == "e1"
        spans = decision_spans(exporter)
        assert {s.attributes["routeiq.decision.outcome"] for s in spans} == {"shuffle"}
        assert spans[0].attributes["routeiq.propensity"] == 0.5
        assert served(await ask(router, CODE)) == "strong"  # mapped groups still route
    finally:
        uninstall(router, strategy)


async def _always_failing_run(strategy_settings: dict | None, n: int) -> tuple[int, list]:
    """n requests to a group whose cheapest deployment always fails, num_retries 2."""
    router = Router(
        model_list=[
            deployment("chat", "bad", CHEAP, CHEAP_PRICE, Exception("provider down")),
            deployment("chat", "good", STRONG, STRONG_PRICE, "ok"),
        ],
        num_retries=2,
        retry_after=0,
        allowed_fails=1000,  # LiteLLM's cooldown never rescues us: the router must
    )
    strategy = None
    if strategy_settings is not None:
        strategy = install(router, RouteIQSettings.model_validate(strategy_settings))
    errors, served_by = 0, []
    try:
        for i in range(n):
            try:
                served_by.append(served(await ask(router, f"{CHAT} ({i})")))
            except Exception:
                errors += 1
        if strategy is not None:  # success callbacks run in background tasks: let them land
            for _ in range(250):
                if strategy.engine.decision_log.pending() == 0:
                    break
                await asyncio.sleep(0.02)
    finally:
        if strategy is not None:
            uninstall(router, strategy)
    return errors, served_by


async def test_retries_avoid_the_deployment_that_failed(demo_artifact: Path, tmp_path: Path):
    # Chit-chat goes to the cheap deployment, which always fails: without learning within
    # the request, every retry would pick it again.
    log = tmp_path / "decisions.jsonl"
    settings = {"router": demo_artifact, "lambda": 20.0, "decision_log": log}
    errors, served_by = await _always_failing_run(settings, 50)
    stock_errors, _ = await _always_failing_run(None, 50)  # simple-shuffle, reported beside
    print(f"50 requests, num_retries 2: RouteIQ {errors} errors, simple-shuffle {stock_errors}")
    assert errors == 0 and set(served_by) == {"good"}
    records = read_records(log)
    assert len(records) == 100  # each request: the failed attempt, then the retry
    first = [r for r in records if r.decision.attempt == 1]
    retries = [r for r in records if r.decision.attempt == 2]
    assert len(first) == len(retries) == 50
    assert all(r.decision.deployment == "bad" for r in first)
    assert all(r.outcomes[CHEAP].status == "failure" for r in first)
    assert all(r.outcomes[STRONG].status == "success" for r in retries)
    assert all("retry: excluded bad" in (r.decision.rule or "") for r in retries)
    assert all(
        c.excluded and c.excluded.startswith("retry: failed earlier")
        for r in retries
        for c in r.decision.candidates
        if c.deployment == "bad"
    )


async def test_exploration_through_litellm_logs_propensities_and_outcomes(
    demo_artifact: Path, tmp_path: Path
) -> None:
    router = Router(model_list=model_list(), num_retries=0)
    settings = RouteIQSettings.model_validate(
        {
            "router": demo_artifact,
            "lambda": 20.0,
            "decision_log": tmp_path / "decisions.jsonl",
            "exploration": {
                "mode": "epsilon",
                "epsilon": 0.25,
                "margin": 1.0,
                "max_cost_ratio": 1000,
            },
        }
    )
    strategy = install(router, settings)
    try:
        served_by, headers = [], []
        for _ in range(80):
            metadata: dict = {}
            response = await ask(router, CODE, metadata=metadata)
            served_by.append(served(response))
            headers.append(
                await strategy.callback.async_post_call_response_headers_hook(
                    data={"metadata": metadata}, user_api_key_dict=None, response=response
                )
            )
        records = await settle(strategy, 80)
    finally:
        uninstall(router, strategy)
    for h, dep in zip(headers, served_by, strict=True):
        assert h["x-routeiq-deployment"] == dep
        assert h["x-routeiq-propensity"] == ("0.75" if dep == "strong" else "0.25")
    assert 5 < served_by.count("cheap") < 40  # a quarter of the traffic explores
    assert len(records) == 80
    for rec, dep in zip(records, served_by, strict=True):
        d = rec["decision"]
        assert d["deployment"] == dep and d["greedy"] == "strong"
        assert d["propensity"] == (0.75 if dep == "strong" else 0.25)
        assert rec["outcomes"][d["chosen"]]["status"] == "success"


async def test_sdk_feedback_teaches_the_online_router(demo_artifact: Path, tmp_path: Path) -> None:
    router = Router(model_list=model_list(), num_retries=0)
    settings = RouteIQSettings.model_validate(
        {
            "router": demo_artifact,
            "lambda": 20.0,
            "decision_log": tmp_path / "decisions.jsonl",
            "online": {
                "enabled": True,
                "prior_precision": 1.0,
                "calibration_precision": 1.0,
                "pooled_precision": None,
                "noise": 0.1,
            },
        }
    )
    strategy = install(router, settings)
    try:
        first = served(await ask(router, CODE))
        for _ in range(40):  # the Python API: the decision id is in the request's metadata
            metadata: dict = {}
            if served(await ask(router, CODE, metadata=metadata)) != first:
                break
            result = strategy.engine.feedback(metadata["routeiq_decision_id"], 0.0)
            assert result["learned"] is True
        after = served(await ask(router, CODE))
        await settle(strategy, 1)
    finally:
        uninstall(router, strategy)
    assert after != first  # every rating said the first choice was wrong
    rated = [
        r
        for r in read_records(tmp_path / "decisions.jsonl")
        if r.decision is not None
        and r.outcomes.get(r.decision.chosen)
        and r.outcomes[r.decision.chosen].quality == 0.0
    ]
    assert rated, "the ratings are joined with their decisions in the log"


async def test_turn_off_message_logging_keeps_prompts_out_of_the_log(setup: Any) -> None:
    router, strategy, exporter, _, _ = setup
    marker = "walrus-5521-private"
    messages = [{"role": "user", "content": f"{CODE} {marker}"}]
    await router.acompletion(model="chat", messages=messages, turn_off_message_logging=True)
    await router.acompletion(model="chat", messages=[{"role": "user", "content": CHAT}])
    records = await settle(strategy, 2)
    assert len(records) == 2
    assert marker not in json.dumps(records) and "prompt" not in records[0]
    assert records[1]["prompt"] == CHAT  # other requests keep the default (text)
    assert marker not in json.dumps([dict(s.attributes or {}) for s in decision_spans(exporter)])
