"""``POST /routeiq/feedback`` on a real 2-worker LiteLLM proxy sharing state through Redis.

One proxy (``custom_auth`` maps key A to team t1, key B to team t2, the master key to a proxy
admin), online learning, epsilon exploration and a 2-variant experiment on group "chat", and
its own ``redis-server``. The tests run in file order against the same proxy: authorization
and errors, feedback reaching either worker and the learned state reaching both, then Redis
stopped mid-test (chat requests keep working, feedback never 500s nor hangs), then the
offline tools (``routeiq ope``, ``routeiq experiment report``) on the decision log.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

# Checked without importing LiteLLM (seconds): the proxy's workers import it, in parallel.
from proxy_helpers import require_litellm_proxy

require_litellm_proxy()
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")
redis = pytest.importorskip("redis", reason="redis-py is not installed")

from fastapi import Request  # noqa: E402  (module level: FastAPI resolves annotations here)

from litellm_helpers import CHAT, CHEAP_PRICE, CODE, STRONG_PRICE, deployment  # noqa: E402
from proxy_helpers import free_port, proxy_env, start_proxy, stop, wait_ready  # noqa: E402

pytestmark = pytest.mark.slow

KEY_A, KEY_B = "sk-key-a-" + secrets.token_hex(8), "sk-key-b-" + secrets.token_hex(8)
SYNC_S = 0.5
STRONG_MODEL = "gpt-4o"

CUSTOM_AUTH = """
import os

from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

KEYS = {KEYS!r}


async def user_api_key_auth(request, api_key):
    if api_key == os.environ["LITELLM_MASTER_KEY"]:
        admin = LitellmUserRoles.PROXY_ADMIN
        return UserAPIKeyAuth(api_key=api_key, user_id="admin", user_role=admin)
    if api_key in KEYS:
        team, user = KEYS[api_key]
        return UserAPIKeyAuth(api_key=api_key, team_id=team, user_id=user)
    raise Exception("unknown API key")
"""


def spare_port() -> int:
    for _ in range(100):
        port = free_port()
        if port <= 55535:
            return port
    raise RuntimeError("no free port <= 55535")


def start_redis(work: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (needed for shared_state)")
    port = spare_port()
    with (work / "redis.log").open("wb") as sink:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=work,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return proc, port
        except redis.exceptions.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start: {(work / 'redis.log').read_text()}")
            time.sleep(0.05)


def stop_redis(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proxy_config(artifact: Path, log: Path, redis_port: int) -> dict:
    return {
        "model_list": [
            deployment("chat", "strong", STRONG_MODEL, STRONG_PRICE, "strong says hi"),
            deployment("chat", "cheap", "gpt-4o-mini", CHEAP_PRICE, "cheap says hi"),
        ],
        "router_settings": {"num_retries": 0},
        "general_settings": {"custom_auth": "custom_auth.user_api_key_auth"},
        "litellm_settings": {"callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]},
        "routeiq_settings": {
            "router": str(artifact),
            "lambda": 20.0,
            "decision_log": str(log),
            # Wide margins so both models get explored (logged propensities < 1).
            "exploration": {"mode": "epsilon", "epsilon": 0.2, "margin": 10, "max_cost_ratio": 1e4},
            "online": {"enabled": True, "sync_interval_s": SYNC_S},
            "shared_state": {
                "url": f"redis://127.0.0.1:{redis_port}/0",
                "prefix": "routeiq-test-" + secrets.token_hex(4),
            },
            "groups": {
                "chat": {
                    "experiment": {
                        "name": "fb-exp",
                        "salt": "fb-exp-1",
                        "unit": "request",
                        "variants": [
                            {"name": "control", "weight": 50, "control": True},
                            {"name": "quality", "weight": 50, "lambda": 200.0},
                        ],
                    }
                }
            },
        },
    }


@pytest.fixture(scope="module")
def launched(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Redis and the proxy, started (the workers may still be booting)."""
    work = tmp_path_factory.mktemp("proxy-feedback")
    redis_proc, redis_port = start_redis(work)
    master = "sk-master-" + secrets.token_hex(8)
    keys = {KEY_A: ("t1", "user-a"), KEY_B: ("t2", "user-b")}
    (work / "custom_auth.py").write_text(CUSTOM_AUTH.replace("{KEYS!r}", repr(keys)))
    log, config = work / "decisions.jsonl", work / "config.yaml"
    config.write_text(yaml.safe_dump(proxy_config(artifact, log, redis_port)))
    port, out, metrics = spare_port(), work / "proxy.log", work / "metrics"
    proc = start_proxy(config, 2, out, proxy_env(master, metrics), port)
    try:
        yield {
            "proc": proc,
            "url": f"http://127.0.0.1:{port}",
            "master": master,
            "log": log,
            "out": out,
            "metrics": metrics,
            "redis": redis_proc,
            "artifact": artifact,
        }
    finally:
        stop(proc)
        stop_redis(redis_proc)


@pytest.fixture(scope="module")
def stack(launched: dict) -> dict:
    wait_ready(launched["proc"], launched["out"], 2)
    return launched


# -- helpers ---------------------------------------------------------------------------------


def chat(stack: dict, key: str, text: str) -> Any:
    # A new connection per request, so the kernel spreads requests over both workers.
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(timeout=60) as client:
        return client.post(
            f"{stack['url']}/v1/chat/completions",
            headers={**auth, "Connection": "close"},
            json={"model": "chat", "messages": [{"role": "user", "content": text}]},
        )


def rate(stack: dict, key: str | None, body: Any = None, **kwargs: Any) -> Any:
    headers = {"Connection": "close", **({"Authorization": f"Bearer {key}"} if key else {})}
    headers.update(kwargs.pop("headers", {}))
    with httpx.Client(timeout=30) as client:
        if body is not None:
            kwargs["json"] = body
        return client.post(f"{stack['url']}/routeiq/feedback", headers=headers, **kwargs)


def many(fn: Any, args: list) -> list:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda a: fn(*a), args))


def served(stack: dict, key: str, texts: list[str]) -> list[str]:
    """Send chat requests; all must succeed; their decision ids."""
    replies = many(chat, [(stack, key, t) for t in texts])
    assert [r.status_code for r in replies] == [200] * len(texts), [
        r.text for r in replies if r.status_code != 200
    ]
    assert all(r.headers.get("x-routeiq-variant") for r in replies)
    return [r.headers["x-routeiq-decision-id"] for r in replies]


def decisions(log: Path, ids: list[str], timeout: float = 30) -> dict[str, dict]:
    """The decision records of ``ids`` (first line of each id that has a decision)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, dict] = {}
        for line in log.read_text().splitlines() if log.exists() else []:
            rec = json.loads(line)
            if "decision" in rec and rec["id"] not in found:
                found[rec["id"]] = rec
        if set(ids) <= set(found) or time.monotonic() > deadline:
            missing = set(ids) - set(found)
            assert not missing, f"{len(missing)} decisions not in the log"
            return {i: found[i] for i in ids}
        time.sleep(0.1)


def pid_of(decision_id: str) -> str:
    return decision_id.split("-", 1)[0]


def predicted(record: dict, model: str) -> float:
    return next(
        c["predicted_quality"] for c in record["decision"]["candidates"] if c["model"] == model
    )


def accepted_by_worker(metrics_dir: Path) -> dict[str, float]:
    """``routeiq_feedback_total{result="accepted"}`` per worker pid (one file per process)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    out = {}
    for path in metrics_dir.glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as one:
            shutil.copy(path, one)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=one)
            out[path.stem.split("_", 1)[1]] = sum(
                s.value
                for family in registry.collect()
                if family.name == "routeiq_feedback"
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("result") == "accepted"
            )
    return out


def error_of(reply: Any) -> dict:
    body = reply.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    assert body["error"]["code"] == str(reply.status_code)
    return body["error"]


# -- tests -------------------------------------------------------------------------------------


def test_route_goes_ahead_of_catch_all_routes_once(launched: dict, caplog: Any) -> None:
    """In-process, on a bare FastAPI app (runs while the proxy's workers boot)."""
    from types import SimpleNamespace

    from fastapi import FastAPI, HTTPException
    from fastapi.testclient import TestClient

    from routeiq.integrations.litellm import feedback_endpoint as fe

    async def auth(request: Request) -> Any:  # stands in for LiteLLM's user_api_key_auth
        if request.headers.get("authorization") != "Bearer ok":
            raise HTTPException(401, "no key")
        return SimpleNamespace(api_key="hash-a", team_id="t1", user_role="internal_user")

    rated: list[tuple] = []
    engine = SimpleNamespace(
        settings=SimpleNamespace(feedback=SimpleNamespace(enabled=True)),
        feedback=lambda *args, **kw: rated.append((args, kw)) or {"decision_id": args[0]},
    )
    app = FastAPI()
    app.add_api_route("/{anything:path}", lambda: {"caught": True}, methods=["GET", "POST"])
    first, second = SimpleNamespace(engine=None), SimpleNamespace(engine=engine)
    with caplog.at_level("INFO", logger=fe.__name__):
        assert fe.register_feedback_endpoint(first, app, auth) is True
        assert fe.register_feedback_endpoint(second, app, auth) is False  # once per app
    assert "placed ahead of routes that also match it: /{anything:path}" in caplog.text
    ours = [r for r in app.router.routes if getattr(r, "path", None) == fe.PATH]
    assert len(ours) == 1 and app.router.routes[0] is ours[0]

    client = TestClient(app)
    body = {"decision_id": "1-a", "score": "up"}
    assert client.post(fe.PATH, json=body).status_code == 401  # the auth dependency ran
    reply = client.post(fe.PATH, json=body, headers={"Authorization": "Bearer ok"})
    assert reply.status_code == 200 and reply.json()["status"] == "accepted"  # re-pointed
    ((args, kw),) = rated
    assert args == ("1-a", "up") and kw["identity"].key_hash == "hash-a"
    assert kw["identity"].team_id == "t1" and not kw["identity"].is_admin


def test_only_the_key_that_asked_may_rate(stack: dict) -> None:
    # LiteLLM warns when it must place a route ahead of ours; nothing shadows the path.
    assert "placed ahead of routes" not in stack["out"].read_text(errors="replace")
    ids = served(stack, KEY_A, [CODE, CHAT, f"{CODE} Case 1.", f"{CHAT} Again."])
    first, second, third, fourth = ids

    other = rate(stack, KEY_B, {"decision_id": first, "score": 0.8})
    assert other.status_code == 403
    err = error_of(other)
    assert err["type"] == "permission_error" and "another key" in err["message"]

    ok = rate(stack, KEY_A, {"decision_id": first, "score": 0.8, "metric": "quality"})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["status"] == "accepted" and body["score"] == 0.8 and body["learned"] is True

    again = rate(stack, KEY_A, {"decision_id": first, "score": "down"})
    assert again.status_code == 409 and "already has" in error_of(again)["message"]

    unknown = rate(stack, KEY_A, {"decision_id": f"{pid_of(first)}-nope", "score": 1})
    assert unknown.status_code == 404 and error_of(unknown)["type"] == "not_found_error"

    too_high = rate(stack, KEY_A, {"decision_id": second, "score": 2})
    assert too_high.status_code == 422 and error_of(too_high)["param"] == "score"

    admin = rate(stack, stack["master"], {"decision_id": second, "score": "up"})
    assert admin.status_code == 200 and admin.json()["score"] == 1.0
    # Another metric is recorded, not learned from.
    helpful = rate(stack, KEY_A, {"decision_id": second, "score": True, "metric": "helpful"})
    assert helpful.status_code == 200 and helpful.json()["learned"] is False

    # Batch: one result per item, each with the status a single request would get.
    batch = rate(
        stack,
        KEY_B,
        [
            {"decision_id": third, "score": 1},
            {"decision_id": fourth, "score": 0.5, "oops": 1},
            "not an object",
        ],
    )
    assert batch.status_code == 200, batch.text
    assert [r["status"] for r in batch.json()["results"]] == [403, 422, 422]
    batch = rate(stack, KEY_A, {"items": [{"decision_id": third, "score": 1}]})
    assert batch.json()["accepted"] == 1

    # Malformed or unauthenticated requests, answered in LiteLLM's error shape.
    # A caller LiteLLM's auth refuses gets LiteLLM's own answer, the same as on its chat
    # route (here 500: LiteLLM 1.108.7's auth error handler imports prisma, not installed).
    for key in (None, "sk-unknown"):
        refused = rate(stack, key, {"decision_id": fourth, "score": 1})
        assert refused.status_code != 200
        assert refused.status_code == chat(stack, key or "", CHAT).status_code
    bad_json = rate(stack, KEY_A, content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "not valid JSON" in error_of(bad_json)["message"]
    missing = rate(stack, KEY_A, {"score": 1})
    assert missing.status_code == 422 and error_of(missing)["param"] == "decision_id"
    huge = rate(stack, KEY_A, content=b"[" + b" " * 1_000_001 + b"]")
    assert huge.status_code == 413
    lots = rate(stack, KEY_A, [{"decision_id": fourth, "score": 1}] * 1001)
    assert lots.status_code == 413 and "1000" in error_of(lots)["message"]


def test_feedback_on_any_worker_updates_both_workers(stack: dict) -> None:
    time.sleep(3 * SYNC_S)  # the previous test's ratings reached every worker
    texts = [CODE if i % 2 else f"{CHAT} #{i}" for i in range(40)]
    ids = served(stack, KEY_A, texts)
    records = decisions(stack["log"], ids)
    assert len({pid_of(i) for i in ids}) == 2, "decisions came from one worker only"
    propensities = [r["decision"]["propensity"] for r in records.values()]
    assert min(propensities) < 1.0  # exploration logged its probabilities
    baseline = [predicted(r, STRONG_MODEL) for r in records.values() if r["prompt"] == CODE]
    assert max(baseline) - min(baseline) < 0.02  # same prompt, same prediction everywhere

    before = accepted_by_worker(stack["metrics"])
    # Every decision that served the strong model is rated 0.0, on whichever worker the
    # connection lands; the rest 1.0.
    ratings = [
        (
            stack,
            KEY_A,
            {"decision_id": i, "score": 0.0 if r["decision"]["chosen"] == STRONG_MODEL else 1.0},
        )
        for i, r in records.items()
    ]
    replies = many(rate, ratings)
    assert [r.status_code for r in replies] == [200] * len(replies), [r.text for r in replies]
    assert all(r.json()["learned"] for r in replies)
    rated_pids = {pid_of(i) for i in records}
    after = accepted_by_worker(stack["metrics"])
    handled = {pid: after.get(pid, 0) - before.get(pid, 0) for pid in rated_pids}
    made = {pid: sum(1 for i in records if pid_of(i) == pid) for pid in rated_pids}
    print(f"feedback handled per worker {handled}, decisions per worker {made}")
    assert all(n > 0 for n in handled.values())  # both workers took feedback
    # Connections land on a worker independently of the decision id: with 40 ratings over
    # two workers, some reached the worker that did not decide (all 200 above).

    time.sleep(4 * SYNC_S)  # every worker pulls the merged state
    later = decisions(stack["log"], served(stack, KEY_A, [CODE] * 24))
    lowered: dict[str, list[float]] = {}
    for i, r in later.items():
        lowered.setdefault(pid_of(i), []).append(predicted(r, STRONG_MODEL))
    print(f"{STRONG_MODEL} predicted quality: before {baseline[0]:.3f}, after {lowered}")
    assert len(lowered) == 2, "the new requests came from one worker only"
    for values in lowered.values():
        assert max(values) < baseline[0] - 0.05


def test_redis_outage_fails_no_request(stack: dict) -> None:
    old = served(stack, KEY_A, [f"{CODE} Old {i}." for i in range(12)])
    time.sleep(3 * SYNC_S)  # these reached Redis
    stop_redis(stack["redis"])

    fresh = served(stack, KEY_A, [f"{CHAT} Outage {i}." for i in range(30)])
    started = time.monotonic()
    timed: list[tuple[int, float]] = []

    def timed_rate(decision_id: str) -> None:
        t = time.monotonic()
        reply = rate(stack, KEY_A, {"decision_id": decision_id, "score": 1})
        timed.append((reply.status_code, time.monotonic() - t))
        if reply.status_code == 503:
            assert "Redis" in error_of(reply)["message"]

    many(timed_rate, [(i,) for i in old + fresh])
    statuses = [s for s, _ in timed]
    print(
        f"during the outage: feedback statuses {sorted(set(statuses))}, "
        f"{statuses.count(200)} accepted, {statuses.count(503)} refused, slowest "
        f"{max(t for _, t in timed):.2f} s, all in {time.monotonic() - started:.1f} s"
    )
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) > 0  # each worker still takes feedback on its own decisions
    assert statuses.count(503) > 0  # ...and refuses, for now, those of the other worker
    assert max(t for _, t in timed) < 10
    served(stack, KEY_A, [CODE, CHAT] * 5)  # and chat requests still work


def test_offline_tools_read_the_log(stack: dict) -> None:
    from typer.testing import CliRunner

    from routeiq.cli.main import app  # `routeiq experiment` is registered on it

    runner = CliRunner()
    log, artifact = str(stack["log"]), str(stack["artifact"])
    ope = runner.invoke(app, ["ope", "--log", log, "--router", artifact, "--json"])
    assert ope.exit_code == 0, ope.output
    estimates = json.loads(ope.output)
    quality = estimates["quality"]
    values = {k: v["value"] for k, v in quality.items() if isinstance(v, dict)}
    assert estimates["n"] > 0 and values, estimates
    # IPS is unbiased but unnormalised (it can pass 1); the others are means of qualities.
    assert all(v is not None and 0 <= v <= 1 for k, v in values.items() if k != "ips"), values
    logged = [json.loads(line) for line in stack["log"].read_text().splitlines()]
    min_propensity = min(r["decision"]["propensity"] for r in logged if "decision" in r)
    assert 0 <= values["ips"] <= 1 / min_propensity, values
    print(f"ope: n={estimates['n']}, ess={quality['ess']:.1f}, quality {values}")

    report = runner.invoke(app, ["experiment", "report", "--log", log, "--json"])
    assert report.exit_code == 0, report.output
    out = json.loads(report.output)
    assert out["experiment"] == "fb-exp"
    assert set(out["variants"]) == {"control", "quality"}
    print(f"experiment report: {out['records']} records, variants {list(out['variants'])}")
