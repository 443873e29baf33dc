"""The routing service's HTTP app (in process, through httpx's ASGI transport): the same
decision as the in-process engine, auth, limits, validation, metrics, feedback, tracing and
the checked-in OpenAPI document. Real service processes: tests/test_service_remote.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest

from routeiq.router import Candidate
from routeiq.service.app import create_app, openapi_document
from routeiq.service.auth import BearerCheck, TokenError, read_token
from routeiq.service.runtime import build_service_engine, load_service_settings
from routeiq.service.wire import decision_from_dict
from routeiq.serving import RouteIQSettings, RouteRequest
from routeiq.telemetry.metrics import RouteIQMetrics

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CODE = "Write a Python function that computes the median of a list, with tests."
CHAT = "Hi there! How are you doing this weekend? Any fun plans?"
STRONG_COST, CHEAP_COST = 0.0026, 0.00003
CANDS = [
    {"name": "strong", "model": "gpt-4o", "cost": STRONG_COST},
    {"name": "cheap", "model": "gpt-4o-mini", "cost": CHEAP_COST},
]


def body(text: str = CODE, **extra: Any) -> dict[str, Any]:
    return {"group": "chat", "candidates": CANDS, "text": text, **extra}


@pytest.fixture
def service(artifact: Path, router: Any) -> Callable[..., Any]:
    """``service(settings_overrides, tracer_provider=None, max_body_bytes=...)`` -> (client,
    engine); engines are closed at teardown."""
    made: list[Any] = []

    def make(
        settings: dict[str, Any] | None = None,
        tracer_provider: Any = None,
        max_body_bytes: int = 1 << 20,
        fast: bool = True,
    ) -> tuple[httpx.AsyncClient, Any]:
        data = {"router": str(artifact), "lambda": 20.0, **(settings or {})}
        metrics = RouteIQMetrics(prometheus_client.CollectorRegistry())
        engine = build_service_engine(
            RouteIQSettings.model_validate(data), metrics=metrics, tracer_provider=tracer_provider
        )
        app = create_app(engine, BearerCheck(TOKEN), max_body_bytes=max_body_bytes)
        if not fast:  # POST /v1/route through FastAPI's routing, as with its own telemetry on
            app.route_fast = None  # type: ignore[attr-defined]
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")
        made.append((client, engine))
        return client, engine

    yield make
    for _, engine in made:
        engine.close()


@pytest.fixture
async def client(service: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    c, _ = service()
    async with c:
        yield c


async def test_route_gives_the_in_process_engines_decision(client, make_engine):
    local = make_engine()
    for text in (CODE, CHAT):
        resp = await client.post("/v1/route", json=body(text), headers=AUTH)
        assert resp.status_code == 200, resp.text
        remote = decision_from_dict(resp.json())
        cands = [Candidate(c["name"], c["model"], c["cost"]) for c in CANDS]
        mine = await local.decide(
            RouteRequest("chat", cands, messages=[{"role": "user", "content": text}])
        )
        assert remote.chosen == mine.chosen
        assert [r.predicted_quality for r in remote.candidates] == pytest.approx(
            [r.predicted_quality for r in mine.candidates]
        )
        assert remote.router == mine.router and remote.lam == mine.lam
        assert resp.json()["candidates"][0]["utility"] is not None
    # The two prompts go to different models: the comparison is not vacuous.
    got = [
        (await client.post("/v1/route", json=body(t), headers=AUTH)).json()["chosen"]
        for t in (CODE, CHAT)
    ]
    assert got == ["strong", "cheap"]


async def test_messages_input_and_per_token_prices_are_accepted(client):
    per_token = [
        {"name": "strong", "model": "gpt-4o", "input_cost_per_token": 2.5e-6,
         "output_cost_per_token": 1e-5},
        {"name": "cheap", "model": "gpt-4o-mini", "input_cost_per_token": 1.5e-7,
         "output_cost_per_token": 6e-7},
    ]  # fmt: skip
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": CODE}]
    resp = await client.post(
        "/v1/route",
        json={"group": "chat", "candidates": per_token, "messages": msgs,
              "context": {"input_tokens": 40}},
        headers=AUTH,
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["chosen"] == "strong"
    strong = next(r for r in data["candidates"] if r["name"] == "strong")
    assert strong["cost"] == pytest.approx(40 * 2.5e-6 + 256 * 1e-5)
    resp = await client.post(
        "/v1/route", json={"group": "chat", "candidates": CANDS, "input": CHAT}, headers=AUTH
    )
    assert resp.json()["chosen"] == "cheap"


async def test_no_routable_text_is_the_fallback_rule(client):
    resp = await client.post("/v1/route", json={"group": "chat", "candidates": CANDS}, headers=AUTH)
    data = resp.json()
    assert resp.status_code == 200
    assert (data["chosen"], data["outcome"]) == ("cheap", "fallback")
    assert data["fallback_reason"].startswith("no routable text")


@pytest.mark.parametrize("path", ["/v1/route", "/v1/feedback", "/metrics", "/openapi.json"])
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-0123456789", TOKEN, f"Basic {TOKEN}"])
async def test_every_non_health_endpoint_needs_the_token(client, path, auth):
    headers = {} if auth is None else {"authorization": auth}
    if path.startswith("/v1"):
        resp = await client.post(path, json=body(), headers=headers)
    else:
        resp = await client.get(path, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in resp.text


async def test_health_and_readiness_need_no_token(client):
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        assert resp.status_code == 200, path
    assert (await client.get("/readyz")).json()["routers"] == 1


async def test_oversized_bodies_get_413_with_or_without_content_length(service):
    client, _ = service(max_body_bytes=4096)
    async with client:
        big = body("x " * 5000)
        resp = await client.post("/v1/route", json=big, headers=AUTH)
        assert resp.status_code == 413
        assert "4,096 bytes" in resp.json()["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:
            data = json.dumps(big).encode()
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]

        resp = await client.post("/v1/route", content=chunks(), headers=AUTH)
        assert resp.status_code == 413
        ok = await client.post("/v1/route", json=body(), headers=AUTH)  # the worker lives on
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"candidates": [{"name": "a", "model": "gpt-4o", "cost": -1}]}, "cost"),
        ({"candidates": []}, "candidates"),
        ({"group": ""}, "group"),
        ({"colour": "red"}, "colour"),
        ({"context": {"attempt": 0}}, "attempt"),
        ({"candidates": [CANDS[0], CANDS[0]]}, "names must be unique"),
    ],
)
async def test_bad_bodies_get_422_naming_the_field(client, change, field):
    resp = await client.post("/v1/route", json={**body(), **change}, headers=AUTH)
    assert resp.status_code == 422
    assert field in json.dumps(resp.json()["detail"])


async def test_malformed_json_is_422(client):
    resp = await client.post(
        "/v1/route", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
    )
    assert resp.status_code == 422


async def test_refusals_keep_their_meaning(service):
    client, _ = service({"allow_client_overrides": True})
    async with client:
        excluded = {"strong": "breaker open", "cheap": "breaker open"}
        resp = await client.post("/v1/route", json=body(excluded=excluded), headers=AUTH)
        assert resp.status_code == 409
        assert "breaker open" in resp.json()["error"]["message"]
        resp = await client.post("/v1/route", json=body(override={"lambda": -3}), headers=AUTH)
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "OverrideError"
        # One hard exclusion from the gateway: the other candidate serves.
        resp = await client.post("/v1/route", json=body(excluded={"strong": "x"}), headers=AUTH)
        data = resp.json()
        assert data["chosen"] == "cheap"
        assert next(r for r in data["candidates"] if r["name"] == "strong")["excluded"] == "x"


async def test_metrics_are_served(client):
    await client.post("/v1/route", json=body(), headers=AUTH)
    resp = await client.get("/metrics", headers=AUTH)
    assert resp.status_code == 200
    assert (
        'routeiq_decisions_total{deployment="strong",model_group="chat",outcome="routed"} 1.0'
        in (resp.text)
    )


async def test_feedback_rates_a_served_decision(client):
    decision = (await client.post("/v1/route", json=body(), headers=AUTH)).json()
    resp = await client.post(
        "/v1/feedback", json={"decision_id": decision["id"], "score": "up"}, headers=AUTH
    )
    assert resp.status_code == 200, resp.text
    again = await client.post(
        "/v1/feedback", json={"decision_id": decision["id"], "score": 1}, headers=AUTH
    )
    assert again.status_code == 409
    unknown = await client.post(
        "/v1/feedback", json={"decision_id": "nope", "score": 1}, headers=AUTH
    )
    assert unknown.status_code == 404
    bad = await client.post(
        "/v1/feedback", json={"decision_id": decision["id"], "score": 7}, headers=AUTH
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["type"] == "InvalidFeedback"


async def test_feedback_keeps_the_callers_key(client):
    owner = {"key_hash": "k1", "team_id": "t"}
    req = body(context={"identity": owner})
    decision = (await client.post("/v1/route", json=req, headers=AUTH)).json()
    other = {"decision_id": decision["id"], "score": 1, "identity": {"key_hash": "k2"}}
    resp = await client.post("/v1/feedback", json=other, headers=AUTH)
    assert resp.status_code == 403
    mine = {"decision_id": decision["id"], "score": 1, "identity": owner}
    assert (await client.post("/v1/feedback", json=mine, headers=AUTH)).status_code == 200


async def test_traceparent_makes_the_decision_span_a_child_of_the_caller(service):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client, _ = service(tracer_provider=provider)
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with client:
        headers = {**AUTH, "traceparent": f"00-{trace_id}-{span_id}-01"}
        assert (await client.post("/v1/route", json=body(), headers=headers)).status_code == 200
        assert (await client.post("/v1/route", json=body(), headers=AUTH)).status_code == 200
    first, second = exporter.get_finished_spans()
    assert first.name == "route chat"
    assert format(first.context.trace_id, "032x") == trace_id
    assert first.parent is not None and format(first.parent.span_id, "016x") == span_id
    assert first.attributes["routeiq.chosen.deployment"] == "strong"
    assert second.parent is None  # no traceparent: a root span
    assert format(second.context.trace_id, "032x") != trace_id


async def test_the_fast_path_answers_as_the_framework_does(service):
    """POST /v1/route is answered in front of FastAPI: every answer is the same bytes."""
    big = json.dumps(body("x " * 5000)).encode()

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    answers = []
    for fast in (True, False):
        client, _ = service({"allow_client_overrides": True}, max_body_bytes=4096, fast=fast)
        got = []
        async with client:
            requests: list[dict[str, Any]] = [
                {"json": body(CODE)},
                {"json": body(CHAT, context={"tags": ["a"], "fields": {"task": "code"}})},
                {"json": {"group": "chat", "candidates": CANDS}},  # the fallback rule
                {"json": {**body(), "colour": "red"}},  # 422
                {"content": b"{not json"},  # 422
                {"json": body(excluded={"strong": "x", "cheap": "y"})},  # 409
                {"json": body(override={"lambda": -3})},  # 400
                {"json": body("x " * 5000)},  # 413 by content-length
                {"content": chunked()},  # 413, no content-length
                {"json": body(), "headers": {"authorization": "Bearer wrong-wrong-wrong"}},
                {"json": body(), "headers": {}},  # 401
            ]
            for req in requests:
                headers = req.pop("headers", AUTH)
                resp = await client.post("/v1/route", headers=headers, **req)
                data = resp.content
                if resp.status_code == 200:
                    data = json.dumps({**resp.json(), "id": None}).encode()  # ids differ
                kept = ("content-type", "content-length", "www-authenticate")
                got.append((resp.status_code, {k: resp.headers.get(k) for k in kept}, data))
        answers.append(got)
    fast_answers, framework_answers = answers
    assert [a[0] for a in fast_answers] == [200, 200, 200, 422, 422, 409, 400, 413, 413, 401, 401]
    for mine, theirs in zip(fast_answers, framework_answers, strict=True):
        assert mine[0] == theirs[0] and mine[2] == theirs[2]
        if mine[0] != 200:  # 200: orjson's bytes vs json's; the same decision (above)
            assert mine[1] == theirs[1]


async def test_fastapis_own_telemetry_takes_the_framework_path(service, monkeypatch):
    """With FastAPI's own OpenTelemetry on, its HTTP span is kept: no fast path."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    client, _ = service()
    app = client._transport.app  # type: ignore[attr-defined]
    if not hasattr(app, "_telemetry"):
        pytest.skip("this FastAPI has no telemetry of its own")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app._telemetry["tracer_provider"] = provider

    async def never(*_: Any) -> None:
        raise AssertionError("the fast path ran")

    monkeypatch.setattr(app, "route_fast", never)
    async with client:
        resp = await client.post("/v1/route", json=body(), headers=AUTH)
    assert resp.status_code == 200
    assert resp.json()["chosen"] == "strong"
    assert any("/v1/route" in span.name for span in exporter.get_finished_spans())


def test_decision_json_is_the_standard_librarys():
    from routeiq.decision.decision import CandidateRow, Decision
    from routeiq.service import codec

    rows = (
        CandidateRow("strong", "gpt-4o", 0.8123456789, 0.0026, 0.76, 1.0, True, None, None, None),
        CandidateRow("cheap", "gpt-4o-mini", 1 / 3, 3e-5, float("nan"), 0.0, False, "x", "a", "b"),
    )
    decision = Decision("strong", "gpt-4o", float("inf"), "learned", rows, id="d1", group="é")
    data = decision.to_dict()
    assert json.loads(codec.dumps_decision(data)) == json.loads(json.dumps(data))
    assert decision_from_dict(codec.loads(codec.dumps_decision(data))) == decision_from_dict(data)
    bad = Decision("strong", "gpt-4o", 1.0, "learned", (rows[0].__class__(
        "strong", "gpt-4o", 0.5, 0.1, 0.4, float("nan"), True, None, None, None),))  # fmt: skip
    with pytest.raises(ValueError):
        codec.dumps_decision(bad.to_dict())  # as json.dumps(allow_nan=False): a 500
    route = {**body(), "context": {"tags": ["é"], "fields": {"task": "code"}}}
    assert json.loads(codec.dumps_route_body(route)) == route
    nan_cost = body()
    nan_cost["candidates"] = [{**CANDS[0], "cost": float("nan")}]
    assert b"NaN" in codec.dumps_route_body(nan_cost)  # still the service's 422, not null
    assert b"\\ud800" in codec.dumps_route_body(body("\ud800"))  # orjson refuses: json writes


def test_checked_in_openapi_document_is_current():
    current = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    path = REPO / "docs" / "openapi.json"
    assert path.read_text(encoding="utf-8") == current, (
        "docs/openapi.json is out of date: run routeiq serve --write-openapi docs/openapi.json"
    )
    paths = json.loads(current)["paths"]
    assert set(paths) == {"/v1/route", "/v1/feedback", "/healthz", "/readyz", "/metrics"}
    assert "security" in paths["/v1/route"]["post"] and "security" not in paths["/healthz"]["get"]


async def test_openapi_is_served_with_the_token(client):
    resp = await client.get("/openapi.json", headers=AUTH)
    assert resp.status_code == 200
    assert resp.json() == openapi_document()


def test_tokens_are_read_from_env_or_file_and_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("SVC_TOKEN", "  from-env-0123456789  \n")
    assert read_token("SVC_TOKEN") == "from-env-0123456789"
    file = tmp_path / "token"
    file.write_text("from-file-0123456789\n")
    assert read_token("SVC_TOKEN", file) == "from-file-0123456789"
    monkeypatch.setenv("SVC_SHORT", "short")
    with pytest.raises(TokenError, match="shorter than 16") as err:
        read_token("SVC_SHORT")
    assert "short'" not in str(err.value)
    with pytest.raises(TokenError, match="UNSET_X is empty or unset"):
        read_token("UNSET_X")
    with pytest.raises(TokenError, match="cannot read token file"):
        read_token("SVC_TOKEN", tmp_path / "missing")
    assert TOKEN not in repr(BearerCheck(TOKEN))


def test_service_settings_come_from_the_proxy_config(tmp_path, artifact):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model_list: []\nroutes: 1\nrouteiq_settings:\n  router: {artifact}\n")
    assert load_service_settings(cfg).router == artifact
    (tmp_path / "rq.yaml").write_text("router: ./router\nlambda: 3\n")
    cfg.write_text("routeiq_settings: rq.yaml\n")
    settings = load_service_settings(cfg)
    assert settings.router == tmp_path / "router" and settings.lam == 3
    cfg.write_text("model_list: []\n")
    with pytest.raises(ValueError, match="no top-level 'routeiq_settings:'"):
        load_service_settings(cfg)


# ------------------------------------------------------------------------------ deploy/


def _render(template: str, values: dict[str, Any]) -> str:
    """A minimal Helm render: ``{{ .Values.a.b }}`` and ``{{ .Release.Name }}`` only (helm
    itself is not available here; the templates use nothing else)."""
    import re

    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        if expr == ".Release.Name":
            return "test"
        assert expr.startswith(".Values."), f"template uses {expr!r}: extend this renderer"
        node: Any = values
        for part in expr.removeprefix(".Values.").split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\{\{\s*([^}]+?)\s*\}\}", value, template)


def test_deploy_files_parse_and_agree_on_ports_and_paths():
    import yaml

    from routeiq.serving.settings_file import parse_settings

    deploy = REPO / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "routeiq", "proxy"}
    command = services["routeiq"]["command"]
    port = int(command[command.index("--port") + 1])
    assert "/readyz" in " ".join(services["routeiq"]["healthcheck"]["test"])
    proxy_cfg = yaml.safe_load((deploy / "config" / "proxy.yaml").read_text())
    proxy_settings = parse_settings(proxy_cfg["routeiq_settings"])
    assert proxy_settings.service is not None
    assert proxy_settings.service.urls == [f"http://routeiq:{port}"]
    assert proxy_cfg["litellm_settings"]["callbacks"] == [
        "routeiq.integrations.litellm.proxy.routeiq_callback"
    ]
    service_cfg = yaml.safe_load((deploy / "config" / "service.yaml").read_text())
    service_settings = parse_settings(service_cfg["routeiq_settings"])
    assert service_settings.router == proxy_settings.router  # one artifact, both sides
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["routeiq"]["volumes"]}
    assert mounts["./config/service.yaml"] == "/etc/routeiq/config.yaml"
    assert command[command.index("--config") + 1] == "/etc/routeiq/config.yaml"
    for name in ("proxy.Dockerfile", "service.Dockerfile"):
        text = (deploy / name).read_text()
        assert (
            services["proxy" if name.startswith("proxy") else "routeiq"]["build"]["dockerfile"]
            == f"deploy/{name}"
        )
        assert text.startswith("#") and "\nFROM " in text
    assert "ghcr.io/berriai/litellm:main-v" in (deploy / "proxy.Dockerfile").read_text()
    assert f"EXPOSE {port}" in (deploy / "service.Dockerfile").read_text()

    chart = deploy / "helm" / "routeiq-service"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["apiVersion"] == "v2"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    rendered = {
        p.stem: yaml.safe_load(_render(p.read_text(), values))
        for p in (chart / "templates").glob("*.yaml")
    }
    (container,) = rendered["deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == values["service"]["port"]
    args = container["args"]
    assert int(args[args.index("--port") + 1]) == values["service"]["port"]
    assert rendered["service"]["spec"]["ports"][0]["port"] == values["service"]["port"]
    paths = set(openapi_document()["paths"])
    assert {"/readyz", "/healthz"} <= paths


# ------------------------------------------------------------------------------ breaker, CLI


def test_breaker_opens_after_consecutive_failures_and_lets_one_trial_through():
    from routeiq.service.breaker import CLOSED, HALF_OPEN, OPEN, Breaker

    now = [0.0]
    breaker = Breaker(failures=2, reset_s=5.0, clock=lambda: now[0])
    breaker.record(False)
    breaker.record(True)  # a success in between: not consecutive
    breaker.record(False)
    assert breaker.state == CLOSED and breaker.allow()
    breaker.record(False)
    assert breaker.state == OPEN and not breaker.allow()
    now[0] = 5.0
    assert breaker.state == HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.record(False)  # the trial failed: open for reset_s again
    assert breaker.state == OPEN
    now[0] = 10.0
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()


def test_serve_refuses_to_start_without_a_token_and_writes_openapi(tmp_path, artifact, monkeypatch):
    from typer.testing import CliRunner

    from routeiq.cli.main import app

    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"routeiq_settings:\n  router: {artifact}\n")
    monkeypatch.delenv("ROUTEIQ_SERVICE_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["serve", "--config", str(cfg), "--port", "9"])
    assert result.exit_code == 2
    assert "ROUTEIQ_SERVICE_TOKEN is empty or unset" in result.output
    monkeypatch.setenv("ROUTEIQ_SERVICE_TOKEN", TOKEN)
    cfg.write_text("routeiq_settings:\n  router: ./missing\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(cfg), "--port", "9"])
    assert result.exit_code == 2 and "router artifact not found" in result.output
    assert TOKEN not in result.output
    out = tmp_path / "openapi.json"
    result = CliRunner().invoke(app, ["serve", "--write-openapi", str(out)])
    assert result.exit_code == 0
    assert json.loads(out.read_text()) == openapi_document()


async def test_a_new_artifact_version_is_swapped_in_under_load(service, artifact, tmp_path):
    import asyncio
    import shutil

    from routeiq.integrations.litellm.demo import build_demo_router

    live = tmp_path / "router"
    shutil.copytree(artifact, live)
    client, engine = service(
        {"router": str(live), "hot_reload": {"enabled": True, "interval_s": 0.05}}
    )
    old = engine.registry.get(live).digest
    statuses: list[int] = []
    digests: list[str] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            reply = await client.post("/v1/route", json=body(), headers=AUTH)
            statuses.append(reply.status_code)
            if reply.status_code == 200:
                digests.append(reply.json()["router"])
            await asyncio.sleep(0.005)

    async with client:
        tasks = [asyncio.create_task(loop()) for _ in range(4)]
        await asyncio.sleep(0.2)
        # A new version, published by the atomic directory swap every artifact write uses.
        new = await asyncio.to_thread(build_demo_router, live, 5.0)
        assert new != old
        for _ in range(200):  # the watcher polls every 50 ms
            if digests and digests[-1] == new:
                break
            await asyncio.sleep(0.025)
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)
    assert set(statuses) == {200}, statuses
    assert digests[0] == old and digests[-1] == new
    swapped = digests.index(new)
    assert set(digests[swapped:]) == {new}  # no request went back to the old version
