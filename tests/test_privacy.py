"""Prompt privacy in the decision log: text, features or nothing; LiteLLM's
turn_off_message_logging honoured; a router trained on logged features routes like one
trained on the text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from routeiq.cli.main import app
from routeiq.data.loaders import load_dataset
from routeiq.features.lexical import LexicalFeaturizer
from routeiq.quality.linear import LogisticQuality
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving import DecisionEngine, DecisionLog, RouteIQSettings, RouteRequest
from routeiq.serving.registry import RouterRegistry
from routeiq.telemetry.metrics import RouteIQMetrics

MARKER = "zebra-7731-quokka"  # appears only in prompts
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))


def engine_for(artifact: Path, log: Path, **settings: Any) -> tuple[DecisionEngine, Any, Any]:
    metrics = RouteIQMetrics(prometheus_client.CollectorRegistry())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = DecisionEngine(
        RouteIQSettings.model_validate({"router": str(artifact), "lambda": 20.0, **settings}),
        RouterRegistry({artifact: LearnedRouter.load(artifact)}),
        decision_log=DecisionLog(log, metrics=metrics),
        metrics=metrics,
        tracer_provider=provider,
    )
    return engine, metrics, exporter


def ask(text: str, **kwargs: Any) -> RouteRequest:
    messages = [{"role": "user", "content": text}]
    return RouteRequest(group="chat", candidates=CANDS, messages=messages, **kwargs)


@pytest.mark.parametrize(
    ("log_prompt", "redact", "kept"),
    [("none", False, "nothing"), ("text", True, "nothing"), ("features", True, "features")],
)
async def test_no_prompt_text_in_any_record_span_or_metric(
    artifact, tmp_path, log_prompt, redact, kept
):
    log = tmp_path / "decisions.jsonl"
    groups = {"shuf": {"mode": "shuffle"}, "cheap": {"mode": "cheapest"}}
    engine, metrics, exporter = engine_for(artifact, log, log_prompt=log_prompt, groups=groups)
    for group in ("chat", "shuf", "cheap"):  # the learned rule and rules that read no text
        for text in (f"Write a python function {MARKER}", f"Hi there {MARKER}"):
            request = ask(text, redact=redact)
            d = await engine.decide(RouteRequest(**{**vars(request), "group": group}))
            engine.record_outcome(
                d.id, group=group, deployment=d.chosen, model=d.model, status="success"
            )
    engine.close()
    written = log.read_text()
    records = [json.loads(line) for line in written.splitlines()]
    assert len(records) == 6 and MARKER not in written
    assert all("prompt" not in r for r in records)
    assert all(("features" in r) == (kept == "features") for r in records)
    spans = json.dumps([dict(s.attributes or {}) for s in exporter.get_finished_spans()])
    assert exporter.get_finished_spans() and MARKER not in spans
    assert MARKER.encode() not in prometheus_client.generate_latest(metrics.registry)


async def test_text_is_logged_by_default_and_features_carry_the_featurizer(artifact, tmp_path):
    log = tmp_path / "text.jsonl"
    engine, _, _ = engine_for(artifact, log)
    await engine.decide(ask(f"Hello {MARKER}"))
    engine.close()
    assert json.loads(log.read_text())["prompt"] == f"Hello {MARKER}"

    log = tmp_path / "features.jsonl"
    engine, _, _ = engine_for(artifact, log, log_prompt="features")
    learned = engine.registry.get(artifact)
    await engine.decide(ask(f"Hello {MARKER}"))
    engine.close()
    features = json.loads(log.read_text())["features"]
    assert features["featurizer"] == learned.featurizer_digest
    assert len(features["values"]) == learned.featurizer.n_features_out
    assert features["tokens"] > 0


def test_litellm_message_logging_switches(monkeypatch):
    litellm = pytest.importorskip("litellm")
    from routeiq.integrations.litellm.request_fields import message_logging_off

    assert not message_logging_off({}, {})
    assert message_logging_off({"turn_off_message_logging": True}, {})
    assert message_logging_off({"turn_off_message_logging": "true"}, {})
    on = {"headers": {"X-LiteLLM-Enable-Message-Redaction": "true"}}
    assert message_logging_off({}, on)
    # A client cannot switch the operator's redaction off.
    off = {"headers": {"litellm-disable-message-redaction": "true"}}
    monkeypatch.setattr(litellm, "turn_off_message_logging", True)
    assert message_logging_off({"turn_off_message_logging": False}, off)


def test_a_router_trained_on_logged_features_routes_like_one_trained_on_text(
    routerbench_csv, tmp_path
):
    data = load_dataset(routerbench_csv).split("train")
    serving = tmp_path / "serving"  # the router whose featurizer logs the features
    LearnedRouter(LexicalFeaturizer(n_components=48), LogisticQuality(C=1.0), lam=20.0).fit(
        data.subset(range(0, 300))
    ).save(serving)
    rows = range(300, 700)
    cands = [Candidate(m, m) for m in data.models]

    async def serve() -> list[str]:
        engine, _, _ = engine_for(serving, tmp_path / "log.jsonl", log_prompt="features")
        ids = []
        for i in rows:
            d = await engine.decide(
                RouteRequest(group="chat", candidates=cands, input=data.prompts[i])
            )
            ids.append(d.id)
        engine.close()
        return ids

    import asyncio

    ids = asyncio.run(serve())

    # Full-information labels arrive later, by decision id (as benchmark feedback would).
    def outcomes(i: int) -> dict[str, Any]:
        return {
            m: {"quality": float(data.quality[i, j]), "cost": float(data.cost[i, j])}
            for j, m in enumerate(data.models)
            if data.quality[i, j] == data.quality[i, j]
        }

    with open(tmp_path / "log.jsonl", "a") as fh:
        for decision_id, i in zip(ids, rows, strict=True):
            fh.write(json.dumps({"id": decision_id, "outcomes": outcomes(i)}) + "\n")
    with open(tmp_path / "text.jsonl", "w") as fh:
        for i in rows:
            line = {"id": f"t{i}", "prompt": data.prompts[i], "outcomes": outcomes(i)}
            fh.write(json.dumps(line) + "\n")
    assert MARKER not in (tmp_path / "log.jsonl").read_text()
    assert data.prompts[300][:40] not in (tmp_path / "log.jsonl").read_text()

    runner = CliRunner()
    common = ["--router", "logistic", "--lambda", "20", "--featurizer-from", str(serving)]
    for name in ("log", "text"):
        args = ["train", "--data", str(tmp_path / f"{name}.jsonl"), "--out", str(tmp_path / name)]
        result = runner.invoke(app, [*args, *common])
        assert result.exit_code == 0, result.output
    from_log, from_text = (
        LearnedRouter.load(tmp_path / "log"),
        LearnedRouter.load(tmp_path / "text"),
    )
    held_out = [data.prompts[i] for i in range(700, 800)]
    P_log, P_text = from_log.predict_quality(held_out), from_text.predict_quality(held_out)
    assert abs(P_log - P_text).max() < 1e-3
    same = sum(from_log.route(t).chosen == from_text.route(t).chosen for t in held_out)
    assert same >= 99, same

    # Without the featurizer that made them, logged features are refused with the fix.
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "log.jsonl"), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "--featurizer-from" in " ".join(result.output.split())
