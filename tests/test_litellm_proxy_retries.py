"""A real 2-worker LiteLLM proxy whose cheapest deployment always fails, next to stock LiteLLM.

Checks what a new user of the proxy would hit first: retries that move off the failing
deployment, groups RouteIQ has no model for (embeddings, unknown chat models) that still
serve, and a decision log that keeps every attempt (retries, fallback hops, and requests in
flight at SIGTERM), each record joined with its outcome, as many records as
``routeiq_decisions_total`` counted.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("litellm.proxy.proxy_server", reason="litellm[proxy] is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")

from litellm_helpers import (  # noqa: E402
    CHAT,
    CHEAP_PRICE,
    CODE,
    STRONG_PRICE,
    deployment,
    embedding_deployment,
)
from proxy_helpers import (  # noqa: E402
    counter_total,
    free_port,
    proxy_env,
    start_proxy,
    stop,
    wait_ready,
)
from routeiq.data.records import read_records  # noqa: E402

pytestmark = pytest.mark.slow

IMAGE_ONLY = [
    {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
    }
]


def model_list() -> list[dict]:
    slow = deployment("slow", "slow-1", "gpt-4o-mini", CHEAP_PRICE, "late")
    slow["litellm_params"]["mock_delay"] = 2.0
    return [
        # Chit-chat goes to the cheap deployment, which always fails.
        deployment("chat", "good", "gpt-4o", STRONG_PRICE, "strong says hi"),
        deployment("chat", "bad", "gpt-4o-mini", CHEAP_PRICE, "litellm.InternalServerError"),
        deployment("broken", "broken-1", "gpt-4o", STRONG_PRICE, "litellm.InternalServerError"),
        slow,
        # Groups the router knows no model of: they must serve, by LiteLLM's own rule.
        deployment("odd", "odd-1", "mystery-model-a", STRONG_PRICE, "odd a"),
        deployment("odd", "odd-2", "mystery-model-b", CHEAP_PRICE, "odd b"),
        embedding_deployment("embed", "embed-1"),
    ]


def write_config(path: Path, artifact: Path | None, log: Path | None) -> None:
    config: dict[str, Any] = {
        "model_list": model_list(),
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "num_retries": 2,
            "retry_after": 0,
            "allowed_fails": 1000,  # LiteLLM's cooldown never rescues the failing deployment
            "fallbacks": [{"broken": ["chat"]}],
        },
    }
    if artifact is not None:
        config["litellm_settings"] = {
            "callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]
        }
        config["routeiq_settings"] = {
            "router": str(artifact),
            "lambda": 20.0,
            "decision_log": str(log),
        }
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    """RouteIQ and stock simple-shuffle, 2 workers each, started side by side."""
    from routeiq.integrations.litellm.demo import build_demo_router

    work = tmp_path_factory.mktemp("retries")
    build_demo_router(work / "router")
    key = "sk-" + secrets.token_hex(16)
    running: dict[str, dict] = {}
    try:
        for name in ("routeiq", "stock"):
            config, out, log = work / f"{name}.yaml", work / f"{name}.out", work / f"{name}.jsonl"
            artifact = work / "router" if name == "routeiq" else None
            write_config(config, artifact, log if artifact else None)
            port = free_port()
            metrics = work / f"{name}-prom"
            proc = start_proxy(config, 2, out, proxy_env(key, metrics), port)
            running[name] = {
                "proc": proc,
                "out": out,
                "log": log,
                "metrics": metrics,
                "url": f"http://127.0.0.1:{port}",
                "key": key,
            }
        for p in running.values():
            wait_ready(p["proc"], p["out"], 2)
        yield running
    finally:
        for p in running.values():
            stop(p["proc"])


def post(proxy: dict, messages: list | str, model: str = "chat", path: str = "chat/completions"):
    body: dict[str, Any] = {"model": model}
    if path == "embeddings":
        body["input"] = messages
    else:
        body["messages"] = (
            messages if isinstance(messages, list) else [{"role": "user", "content": messages}]
        )
    # A new connection per request, so the kernel spreads requests over both workers.
    with httpx.Client(timeout=60) as client:
        return client.post(
            f"{proxy['url']}/v1/{path}",
            headers={"Authorization": f"Bearer {proxy['key']}", "Connection": "close"},
            json=body,
        )


def test_retries_move_off_the_failing_deployment(proxies: dict[str, dict]) -> None:
    texts = [f"{CHAT} (request {i})" for i in range(50)]
    results = {}
    for name, proxy in proxies.items():
        with ThreadPoolExecutor(max_workers=8) as pool:
            results[name] = list(pool.map(lambda t, p=proxy: post(p, t), texts))
    errors = {name: sum(r.status_code != 200 for r in replies) for name, replies in results.items()}
    print(f"\n50 requests, num_retries 2, one always-failing deployment: client errors {errors}")
    assert errors["routeiq"] == 0
    replies = results["routeiq"]
    assert {r.headers["x-litellm-model-id"] for r in replies} == {"good"}
    assert {r.headers["x-routeiq-deployment"] for r in replies} == {"good"}


def test_groups_without_a_routable_model_or_text_still_serve(proxies: dict[str, dict]) -> None:
    proxy = proxies["routeiq"]
    warned = [
        line
        for line in proxy["out"].read_text(errors="replace").splitlines()
        if "served by the shuffle rule" in line
    ]
    assert len(warned) == 2  # one warning per worker, naming both groups
    assert all("'embed'" in line and "'odd'" in line for line in warned)
    emb = post(proxy, ["hello"], model="embed", path="embeddings")
    assert emb.status_code == 200, emb.text
    assert emb.headers["x-litellm-model-id"] == "embed-1"
    odd = post(proxy, CHAT, model="odd")
    assert odd.status_code == 200, odd.text
    assert odd.headers["x-routeiq-outcome"] == "shuffle"
    image = post(proxy, IMAGE_ONLY)
    assert image.status_code == 200, image.text
    assert image.headers["x-routeiq-outcome"] == "fallback"
    assert image.headers["x-routeiq-fallback-reason"].startswith("no routable text")


def test_every_attempt_is_logged_with_its_outcome_through_sigterm(
    proxies: dict[str, dict],
) -> None:
    proxy = proxies["routeiq"]
    with ThreadPoolExecutor(max_workers=12) as pool:
        mixed = [pool.submit(post, proxy, f"{CHAT} #{i}") for i in range(10)]  # retries
        mixed += [pool.submit(post, proxy, f"{CODE} #{i}") for i in range(5)]
        mixed += [pool.submit(post, proxy, f"{CHAT} fb {i}", "broken") for i in range(5)]
        assert all(f.result().status_code == 200 for f in mixed)
        in_flight = [pool.submit(post, proxy, f"{CHAT} late {i}", "slow") for i in range(6)]
        time.sleep(1.0)  # the slow deployment answers after 2 s: these are in flight now
        proxy["proc"].send_signal(signal.SIGTERM)  # the parent forwards it to both workers
        late = [f.result() for f in in_flight]
    assert all(r.status_code == 200 for r in late), [r.text for r in late]
    assert proxy["proc"].wait(timeout=60) is not None

    decisions = counter_total(proxy["metrics"], "routeiq_decisions")
    records = read_records(proxy["log"])
    assert decisions == len(records) > 0  # one record per decision, none lost
    assert all(r.outcomes for r in records), [r.id for r in records if not r.outcomes]
    statuses = [o.status for r in records for o in r.outcomes.values()]
    assert "failure" in statuses and "success" in statuses
    by_outcome = [r.decision.outcome for r in records if r.decision is not None]
    assert {"routed", "fallback", "shuffle"} <= set(by_outcome)
    chat = [r for r in records if r.decision and r.decision.group == "chat"]
    moved = [r for r in chat if "retry: excluded bad" in (r.decision.rule or "")]
    # Every request that reached "bad" was retried once, off it: the 50 of the first test,
    # the image-only one (the fallback rule picks the cheapest), 10 chit-chat requests here
    # and 5 fallback hops from "broken".
    assert len(moved) == 50 + 1 + 10 + 5
    assert all(r.decision.deployment == "good" for r in moved)
    assert all(r.decision.attempt >= 2 for r in moved)
    for r in chat:  # each attempt joined with its own outcome
        expected = "failure" if r.decision.deployment == "bad" else "success"
        assert [o.status for o in r.outcomes.values()] == [expected]
    assert len([r for r in records if r.decision and r.decision.group == "slow"]) == 6
