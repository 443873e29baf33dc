"""Decision log in a Redis stream: a real SDK Router with mock deployments, the real Redis at
127.0.0.1:6379 (tests skip with the reason when it does not answer), one stream per test."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map
litellm = pytest.importorskip("litellm", reason="litellm is not installed (pip install .[litellm])")
redis = pytest.importorskip("redis", reason="redis is not installed (pip install .[litellm])")
prometheus_client = pytest.importorskip("prometheus_client", reason="prometheus-client missing")

from litellm import Router  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from litellm_helpers import CHAT, CODE, ask, model_list, served  # noqa: E402
from routeiq.cli.main import app  # noqa: E402
from routeiq.data.dataset import DataError  # noqa: E402
from routeiq.data.records import RouteRecord, dataset_to_records, write_records  # noqa: E402
from routeiq.integrations.litellm import (  # noqa: E402
    DecisionLog,
    RouteIQConfigError,
    RouteIQSettings,
    install,
    parse_settings,
    uninstall,
)
from routeiq.integrations.litellm.demo import (  # noqa: E402
    CHEAP,
    STRONG,
    demo_dataset,
)
from routeiq.integrations.redis_stream import RedisStreamSink, read_stream  # noqa: E402
from routeiq.integrations.redis_url import DEFAULT_STREAM, RedisStreamConfig  # noqa: E402
from routeiq.router import LearnedRouter  # noqa: E402
from routeiq.serving.decision_log import JsonlFileSink  # noqa: E402
from routeiq.telemetry.metrics import RouteIQMetrics  # noqa: E402

REDIS = "redis://127.0.0.1:6379/0"
SINK_LOGGER = "routeiq.integrations.redis_stream"


@pytest.fixture(scope="module")
def redis_client() -> Iterator[Any]:
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=0.5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server answering at 127.0.0.1:6379 ({exc})")
    yield client
    client.close()


@pytest.fixture
def stream(redis_client: Any) -> Iterator[str]:
    name = f"routeiq:test:{uuid.uuid4().hex}"
    yield name
    redis_client.delete(name)


def demo_router() -> Router:
    return Router(
        model_list=model_list(),
        num_retries=0,
        fallbacks=[{"broken": ["backup"]}],
    )


def closed_port() -> int:
    """A local TCP port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record_line(i: int) -> str:
    return json.dumps({"id": f"r{i}", "prompt": f"hello number {i}"})


async def wait_async(condition: Callable[[], bool], tick: Callable[[], Any] = lambda: None) -> None:
    """Poll without blocking the loop (LiteLLM runs outcome callbacks on it)."""
    for _ in range(500):
        tick()
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached within 10 s")


def wait_sync(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached within 10 s")


def dropped_metric(registry: Any) -> float | None:
    return registry.get_sample_value("routeiq_decision_log_dropped_total", {"sink": "redis"})


async def test_router_decisions_reach_the_stream(
    demo_artifact: Path, redis_client: Any, stream: str
) -> None:
    router = demo_router()
    url = f"{REDIS}?stream={stream}&maxlen=1000"
    registry = prometheus_client.CollectorRegistry()
    settings = RouteIQSettings.model_validate(
        {"router": demo_artifact, "lambda": 20.0, "decision_log": url}
    )
    strategy = install(router, settings, metrics=RouteIQMetrics(registry))
    try:
        assert isinstance(strategy.engine.decision_log.sink, RedisStreamSink)
        assert served(await ask(router, CODE)) == "strong"
        assert served(await ask(router, CHAT)) == "cheap"
        assert served(await ask(router, CHAT, model="broken")) == "backup-cheap"  # fallback hop
        # Four decisions (chat x2, broken, backup); each is written once its outcome arrives.
        await wait_async(
            lambda: redis_client.xlen(stream) >= 4, strategy.engine.decision_log.flush_expired
        )
        await asyncio.sleep(0.1)  # a duplicate or a stray partial line would show up by now
        assert strategy.engine.decision_log.pending() == 0
    finally:
        uninstall(router, strategy)

    decisions = sum(
        registry.get_sample_value(
            "routeiq_decisions_total", {"model_group": g, "deployment": d, "outcome": "routed"}
        )
        or 0.0
        for g, d in [
            ("chat", "strong"),
            ("chat", "cheap"),
            ("broken", "broken-1"),
            ("backup", "backup-strong"),
            ("backup", "backup-cheap"),
        ]
    )
    entries = redis_client.xrange(stream)
    assert len(entries) == decisions == 4  # one entry per decision
    assert all(set(fields) == {b"record"} for _, fields in entries)
    records = [RouteRecord.model_validate_json(fields[b"record"]) for _, fields in entries]
    assert len({r.id for r in records}) == 4
    by_kind = {
        (tuple(c.deployment for c in r.decision.candidates), r.prompt): r
        for r in records
        if r.decision is not None
    }
    code = by_kind[(("strong", "cheap"), CODE)]
    assert code.decision.chosen == STRONG and code.decision.propensity == 1.0
    assert code.outcomes[STRONG].status == "success" and code.outcomes[STRONG].cost > 0
    chat = by_kind[(("strong", "cheap"), CHAT)]
    assert chat.decision.chosen == CHEAP
    assert chat.outcomes[CHEAP].status == "success" and chat.outcomes[CHEAP].cost > 0
    broken = by_kind[(("broken-1",), CHAT)]
    assert broken.outcomes[STRONG].status == "failure" and broken.outcomes[STRONG].cost is None
    backup = by_kind[(("backup-strong", "backup-cheap"), CHAT)]
    assert backup.decision.chosen == CHEAP and backup.outcomes[CHEAP].status == "success"
    # Reading back gives the same records.
    assert read_stream(url) == records
    assert dropped_metric(registry) == 0


async def test_requests_succeed_while_redis_is_down(
    demo_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    router = demo_router()
    registry = prometheus_client.CollectorRegistry()
    settings = RouteIQSettings.model_validate(
        {
            "router": demo_artifact,
            "lambda": 20.0,
            "decision_log": f"redis://127.0.0.1:{port}/0?stream=routeiq:test:down&buffer=3",
        }
    )
    strategy = install(router, settings, metrics=RouteIQMetrics(registry))
    sink = strategy.engine.decision_log.sink
    try:
        with caplog.at_level(logging.WARNING, logger=SINK_LOGGER):
            for i in range(6):
                assert served(await ask(router, f"{CHAT} ({i})")) == "cheap"
            # All six records reach the sink; at most three are kept, the three oldest dropped.
            await wait_async(lambda: sink.dropped == 3 and sink.failed_attempts >= 2)
        assert sink.buffered() == 3 and sink.written == 0
        assert dropped_metric(registry) == 3
        outage = [
            r.getMessage() for r in caplog.records if "cannot write to Redis" in r.getMessage()
        ]
        assert len(outage) == 1, outage  # once per outage, not once per retry
        assert f"127.0.0.1:{port}" in outage[0] and "up to 3 records" in outage[0]
    finally:
        uninstall(router, strategy)  # closing while Redis is down gives up the rest, counted
    assert sink.buffered() == 0 and sink.dropped == 6
    assert dropped_metric(registry) == 6


def test_sink_buffers_through_an_outage_and_recovers(
    redis_client: Any, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The key holds a string, so XADD fails (WRONGTYPE) until the key is deleted.
    redis_client.set(stream, "not a stream")
    drops: list[int] = []
    config = RedisStreamConfig.from_url(f"{REDIS}?stream={stream}&buffer=3")
    sink = RedisStreamSink(config, on_drop=drops.append, retry_s=0.01, max_retry_s=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger=SINK_LOGGER):
            sink.write([record_line(0)])
            wait_sync(lambda: sink.failed_attempts >= 1)
            for i in range(1, 5):
                sink.write([record_line(i)])
            wait_sync(lambda: sink.dropped == 2 and sink.failed_attempts >= 3)
            assert sink.buffered() == 3 and sum(drops) == 2
            redis_client.delete(stream)
            assert sink.flush(10.0)
        ids = [json.loads(f[b"record"])["id"] for _, f in redis_client.xrange(stream)]
        assert ids == ["r2", "r3", "r4"]  # the newest three, in order
        messages = [r.getMessage() for r in caplog.records if r.name == SINK_LOGGER]
        outage = [m for m in messages if "cannot write to Redis" in m]
        assert len(outage) == 1 and "WRONGTYPE" in outage[0]
        assert "hello number" not in outage[0]  # the failed command (and prompt) stays out
        assert any("again; 2 records were dropped during the outage" in m for m in messages)
    finally:
        sink.close()
    assert sink.written == 3 and sink.dropped == 2


def test_maxlen_trims_the_stream(redis_client: Any, stream: str) -> None:
    sink = RedisStreamSink(RedisStreamConfig.from_url(f"{REDIS}?stream={stream}&maxlen=10"))
    try:
        sink.write([record_line(i) for i in range(1000)])
        assert sink.flush(10.0)
    finally:
        sink.close()
    assert sink.written == 1000
    # "MAXLEN ~ 10" trims whole radix-tree nodes (100 entries by default), never below 10.
    assert 10 <= redis_client.xlen(stream) <= 200


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://", "has no host"),
        ("redis://localhost:port/0", "invalid port"),
        ("redis://localhost:6379/zero", "database must be a number"),
        ("redis://localhost:6379/0?maxlen=0", "maxlen must be a whole number >= 1"),
        ("redis://localhost:6379/0?maxlen=ten", "maxlen must be a whole number >= 1"),
        ("redis://localhost:6379/0?buffer=-5", "buffer must be a whole number >= 1"),
        ("redis://localhost:6379/0?strem=x", "unknown Redis URL option 'strem'"),
        ("redis://localhost:6379/0?stream=a&stream=b", "'stream' is given twice"),
        ("redis://localhost:6379/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("http://localhost:6379/0", "unsupported URL scheme 'http'"),
        ("redis://[::1/0", "malformed Redis URL"),
    ],
)
def test_bad_urls_fail_at_settings_validation(url: str, expected: str) -> None:
    with pytest.raises(RouteIQConfigError, match=r"routeiq_settings\.decision_log: ") as info:
        parse_settings({"decision_log": url})
    assert expected in str(info.value)


def test_url_defaults_paths_and_secrets(tmp_path: Path) -> None:
    settings = parse_settings(
        {"decision_log": "redis://:hunter2@cache.internal:6380/3?socket_timeout=1"}
    )
    config = settings.decision_log
    assert isinstance(config, RedisStreamConfig)
    assert (config.stream, config.maxlen, config.buffer) == (DEFAULT_STREAM, None, 10_000)
    assert config.url == "redis://:hunter2@cache.internal:6380/3?socket_timeout=1"
    assert parse_settings({"decision_log": "redis://h/0?stream="}).decision_log.stream == (
        DEFAULT_STREAM  # a blank stream name also means the default
    )
    # The password never shows in repr, display or errors.
    assert "hunter2" not in repr(settings) and "hunter2" not in config.display
    assert config.display == "redis://***@cache.internal:6380/3 stream 'routeiq:decisions'"
    with pytest.raises(RouteIQConfigError) as info:
        parse_settings({"decision_log": "redis://:hunter2@cache.internal:bad/0"})
    assert "hunter2" not in str(info.value)
    # File paths work as before: relative ones resolve against the config's directory.
    relative = parse_settings({"decision_log": "logs/decisions.jsonl"}, base_dir=tmp_path)
    assert relative.decision_log == tmp_path / "logs" / "decisions.jsonl"
    assert isinstance(DecisionLog(relative.decision_log).sink, JsonlFileSink)
    # A URL given straight to DecisionLog is a stream, not a file named "redis:".
    log = DecisionLog("redis://127.0.0.1:6379/0?stream=x")
    assert isinstance(log.sink, RedisStreamSink) and log.path is None
    log.close()


def test_read_stream_errors_are_clear(redis_client: Any, stream: str) -> None:
    url = f"{REDIS}?stream={stream}"
    with pytest.raises(DataError, match="no stream named"):
        read_stream(url)
    redis_client.xadd(stream, {"record": record_line(0)})
    redis_client.xadd(stream, {"payload": "x"})
    with pytest.raises(DataError, match="has no 'record' field"):
        read_stream(url)
    redis_client.delete(stream)
    redis_client.xadd(stream, {"record": json.dumps({"id": "a", "outcomes": {"m": {"cost": -1}}})})
    with pytest.raises(DataError, match=r"outcomes\.m\.cost"):
        read_stream(url)
    with pytest.raises(DataError, match="cannot read the stream"):
        read_stream(f"redis://127.0.0.1:{closed_port()}/0?stream=x", timeout_s=0.5)


def test_train_reads_a_stream(redis_client: Any, stream: str, tmp_path: Path) -> None:
    # Decisions first, quality feedback later under the same ids: entries merge like lines.
    records = dataset_to_records(demo_dataset())
    for rec in records:
        costs = {m: {"cost": o.cost} for m, o in rec.outcomes.items()}
        first = {"id": rec.id, "prompt": rec.prompt, "task": rec.task, "outcomes": costs}
        redis_client.xadd(stream, {"record": json.dumps(first)})
    for rec in records:
        quality = {m: {"quality": o.quality} for m, o in rec.outcomes.items()}
        redis_client.xadd(stream, {"record": json.dumps({"id": rec.id, "outcomes": quality})})
    write_records(tmp_path / "same.jsonl", records)

    runner = CliRunner()
    from_stream = runner.invoke(
        app, ["train", "--data", f"{REDIS}?stream={stream}", "--out", str(tmp_path / "a")]
    )
    assert from_stream.exit_code == 0, from_stream.output
    assert f"{len(records)} prompts" in from_stream.output
    from_file = runner.invoke(
        app, ["train", "--data", str(tmp_path / "same.jsonl"), "--out", str(tmp_path / "b")]
    )
    assert from_file.exit_code == 0, from_file.output
    # The merged stream is the same training data as the file: the same router comes out.
    a, b = LearnedRouter.load(tmp_path / "a"), LearnedRouter.load(tmp_path / "b")
    assert a.models_ == b.models_ == [STRONG, CHEAP]
    prompts = [r.prompt for r in records[:20]] + [CODE, CHAT]
    np.testing.assert_allclose(a.predict_quality(prompts), b.predict_quality(prompts))
