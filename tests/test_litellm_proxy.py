"""RouteIQ in a real LiteLLM proxy process (2 workers), installed through the callbacks line.

Slow (the proxy takes 20-60 s to start): marked ``slow`` so ``-m slow`` / ``-m "not slow"``
select or skip them; they run in the default test command.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("litellm.proxy.proxy_server", reason="litellm[proxy] is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")

from litellm_helpers import CHAT, CHEAP_PRICE, CODE, STRONG_PRICE, deployment  # noqa: E402
from proxy_helpers import (  # noqa: E402
    START_TIMEOUT_S,
    free_port,
    log_lines,
    proxy_env,
    start_proxy,
    stop,
    wait_ready,
)

pytestmark = pytest.mark.slow

FLAKY_PRICE = {"input_cost_per_token": 2.4e-6, "output_cost_per_token": 0.9e-5}


def proxy_config(artifact: Path, log: Path, **settings: Any) -> dict:
    return {
        "model_list": [
            deployment("chat", "strong", "gpt-4o", STRONG_PRICE, "strong says hi"),
            deployment("chat", "cheap", "gpt-4o-mini", CHEAP_PRICE, "cheap says hi"),
            # "flaky" is the cheapest gpt-4o, so code goes there first; it answers 429 and
            # LiteLLM cools it down (per worker: no Redis here).
            deployment("coder", "flaky", "gpt-4o", FLAKY_PRICE, "litellm.RateLimitError"),
            deployment("coder", "coder-strong", "gpt-4o", STRONG_PRICE),
            deployment("coder", "coder-cheap", "gpt-4o-mini", CHEAP_PRICE),
            deployment("broken", "broken-1", "gpt-4o", STRONG_PRICE, "litellm.InternalServerError"),
        ],
        "router_settings": {
            "num_retries": 0,
            "allowed_fails": 0,
            "cooldown_time": 600,
            "fallbacks": [{"broken": ["chat"]}],
        },
        "litellm_settings": {"callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]},
        "routeiq_settings": {
            "router": str(artifact),
            "lambda": 20.0,
            "decision_log": str(log),
            **settings,
        },
    }


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from routeiq.integrations.litellm.demo import build_demo_router

    path = tmp_path_factory.mktemp("proxy-router") / "router"
    build_demo_router(path)
    return path


@pytest.fixture(scope="module")
def proxy(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("proxy")
    log = work / "decisions.jsonl"
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(proxy_config(artifact, log)))
    key = "sk-" + secrets.token_hex(16)
    port = free_port()
    out = work / "proxy.log"
    proc = start_proxy(config, 2, out, proxy_env(key), port)
    try:
        wait_ready(proc, out, 2)
        yield {"url": f"http://127.0.0.1:{port}", "key": key, "log": log, "out": out}
    finally:
        stop(proc)


def post(proxy: dict, text: str | list, model: str = "chat", **extra: Any) -> Any:
    messages = text if isinstance(text, list) else [{"role": "user", "content": text}]
    # A new connection per request, so the kernel spreads requests over both workers.
    with httpx.Client(timeout=60) as client:
        return client.post(
            f"{proxy['url']}/v1/chat/completions",
            headers={"Authorization": f"Bearer {proxy['key']}", "Connection": "close"},
            json={"model": model, "messages": messages, **extra},
        )


def records(log: Path, at_least: int) -> list[dict]:
    return log_lines(log, at_least)


def pid_of(record: dict) -> str:
    return record["id"].split("-", 1)[0]


def deployments(record: dict) -> set[str]:
    return {c["deployment"] for c in record["decision"]["candidates"]}


def chosen_deployment(record: dict) -> str:
    return next(
        c["deployment"] for c in record["decision"]["candidates"] if c["probability"] == 1.0
    )


def test_decisions_follow_the_router_with_headers(proxy: dict, artifact: Path) -> None:
    from routeiq.router import LearnedRouter

    digest = LearnedRouter.load(artifact).digest
    code, chat = post(proxy, CODE), post(proxy, CHAT)
    assert code.status_code == 200, code.text
    assert chat.status_code == 200, chat.text
    assert code.headers["x-litellm-model-id"] == "strong"
    assert chat.headers["x-litellm-model-id"] == "cheap"
    assert code.headers["x-routeiq-model"] == "gpt-4o"
    assert chat.headers["x-routeiq-model"] == "gpt-4o-mini"
    assert code.headers["x-routeiq-deployment"] == "strong"
    assert code.headers["x-routeiq-router"] == digest
    assert code.headers["x-routeiq-outcome"] == "routed"
    ids = {code.headers["x-routeiq-decision-id"], chat.headers["x-routeiq-decision-id"]}
    logged = {r["id"]: r for r in records(proxy["log"], 2)}
    assert ids <= set(logged)  # the header names the record to send feedback to
    rec = logged[code.headers["x-routeiq-decision-id"]]
    assert rec["prompt"] == CODE
    assert rec["decision"]["chosen"] == "gpt-4o"
    assert rec["outcomes"]["gpt-4o"]["status"] == "success"


def test_both_workers_route(proxy: dict) -> None:
    before = len(records(proxy["log"], 0))
    texts = [CHAT if i % 2 else CODE for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda t: post(proxy, t), texts))
    assert all(r.status_code == 200 for r in replies)
    assert [r.headers["x-litellm-model-id"] for r in replies] == [
        "cheap" if i % 2 else "strong" for i in range(40)
    ]
    new = records(proxy["log"], before + 40)[before:]
    assert len({pid_of(r) for r in new}) == 2, "decisions came from one worker only"


def test_cooled_down_deployment_is_never_chosen(proxy: dict) -> None:
    before = len(records(proxy["log"], 0))
    replies = [post(proxy, f"{CODE} Case {i}.", model="coder") for i in range(16)]
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) <= 2  # at most one cooling-down failure per worker
    assert all(
        r.headers["x-litellm-model-id"] == "coder-strong" for r in replies if r.status_code == 200
    )
    new = [
        r
        for r in records(proxy["log"], before + 16)[before:]
        if {"coder-strong", "coder-cheap"} & deployments(r)
    ]
    cooled_somewhere = False
    for pid in {pid_of(r) for r in new}:
        mine = [r for r in new if pid_of(r) == pid]
        picks = [chosen_deployment(r) for r in mine]
        assert picks.count("flaky") <= 1
        if "flaky" in picks:
            later = mine[picks.index("flaky") + 1 :]
            assert all("flaky" not in deployments(r) for r in later)
            cooled_somewhere = cooled_somewhere or bool(later)
    assert cooled_somewhere


def test_fallback_group_is_routed(proxy: dict) -> None:
    reply = post(proxy, CHAT, model="broken")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-litellm-model-id"] == "cheap"  # "chat" hop, routed by RouteIQ
    assert reply.headers["x-routeiq-deployment"] == "cheap"
    assert int(reply.headers["x-litellm-attempted-fallbacks"]) == 1


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": "  \n "}], "no routable text"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ],
                }
            ],
            "no routable text",
        ),
        ([{"role": "user", "content": "word " * 300_000}], "prompt too long"),
    ],
    ids=["whitespace", "image-only", "huge"],
)
def test_requests_without_routable_text_are_served(
    proxy: dict, messages: list, expected: str
) -> None:
    reply = post(proxy, messages)
    assert reply.status_code == 200, reply.text  # LiteLLM serves it, so RouteIQ must too
    assert reply.headers["x-routeiq-outcome"] == "fallback"
    assert reply.headers["x-routeiq-fallback-reason"].startswith(expected)
    assert reply.headers["x-litellm-model-id"] == "cheap"  # the cheapest healthy deployment


def test_client_override_is_ignored_where_not_allowed(proxy: dict) -> None:
    reply = post(proxy, CODE, metadata={"routeiq": "cheapest"})
    assert reply.status_code == 200
    assert reply.headers["x-litellm-model-id"] == "strong"
    assert reply.headers["x-routeiq-override"] == "ignored"


@pytest.mark.parametrize("problem", ["bad-lambda", "tampered-artifact"])
def test_bad_config_refuses_to_start(artifact: Path, tmp_path: Path, problem: str) -> None:
    from routeiq.integrations.litellm.proxy import check

    if problem == "bad-lambda":
        config = proxy_config(artifact, tmp_path / "d.jsonl", **{"lambda": -1})
        expected = "routeiq_settings.lambda: Input should be greater than or equal to 0"
    else:
        copy = tmp_path / "router"
        shutil.copytree(artifact, copy)
        victim = next(p for p in sorted(copy.iterdir()) if p.suffix == ".npz")
        victim.write_bytes(victim.read_bytes()[:-8] + b"tampered")
        config = proxy_config(copy, tmp_path / "d.jsonl")
        expected = "failed to load or verify"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert check(str(path)) == 1  # the pre-flight check says the same without a proxy

    out = tmp_path / "proxy.log"
    proc = start_proxy(path, 1, out, proxy_env("sk-" + secrets.token_hex(16)), free_port())
    try:
        code = proc.wait(timeout=START_TIMEOUT_S)
    finally:
        stop(proc)
    text = out.read_text(errors="replace")
    assert code == 3  # uvicorn's start-up failure status
    # One line, not LiteLLM's start-up traceback.
    assert "RouteIQ: refusing to start: " in text and expected in text
    assert "Traceback" not in text


def test_conversations_stay_put(proxy: dict, artifact: Path) -> None:
    """20 five-turn conversations with mixed topics through the proxy (sticky by default),
    against the same router deciding each turn on its own (sticky off, in process)."""
    import asyncio
    import itertools

    from routeiq.data.prices import estimate_request_tokens, estimate_tokens
    from routeiq.router import Candidate, LearnedRouter
    from routeiq.serving import DecisionEngine, RouteIQSettings, RouteRequest, RouterRegistry

    topics = [
        CODE,
        CHAT,
        "Explain how a B-tree index works.",
        "Thanks, that helps!",
        "Now write it in Rust with tests.",
        "What's a good movie tonight?",
    ]
    conversations = [
        [topics[(c + t * (1 + c % 3)) % len(topics)] for t in range(5)] for c in range(20)
    ]
    price = {"strong": STRONG_PRICE, "cheap": CHEAP_PRICE}
    cache_read = {"strong": 1.25e-6, "cheap": 7.5e-8}  # LiteLLM's map: gpt-4o, gpt-4o-mini

    def turn_cost(messages: list, where: str, stayed: bool) -> float:
        tokens = estimate_request_tokens(messages)
        cost = (
            tokens * price[where]["input_cost_per_token"]
            + 256 * price[where]["output_cost_per_token"]
        )
        if stayed:  # the conversation so far reads from the provider's prompt cache
            history = tokens - estimate_tokens(messages[-1]["content"])
            cost -= history * (price[where]["input_cost_per_token"] - cache_read[where])
        return cost

    engine = DecisionEngine(
        RouteIQSettings.model_validate(
            {"router": str(artifact), "lambda": 20.0, "sticky": {"enabled": False}}
        ),
        RouterRegistry({artifact: LearnedRouter.load(artifact)}),
    )
    results = {"sticky": (0, 0.0), "per turn": (0, 0.0)}
    for turns in conversations:
        messages: list = []
        served: dict[str, list[str]] = {"sticky": [], "per turn": []}
        cost = {"sticky": 0.0, "per turn": 0.0}
        for text in turns:
            messages = [*messages, {"role": "user", "content": text}]
            reply = post(proxy, messages)
            assert reply.status_code == 200, reply.text
            served["sticky"].append(reply.headers["x-routeiq-deployment"])
            tokens = estimate_request_tokens(messages)
            cands = [
                Candidate(
                    n,
                    "gpt-4o" if n == "strong" else "gpt-4o-mini",
                    tokens * p["input_cost_per_token"] + 256 * p["output_cost_per_token"],
                )
                for n, p in price.items()
            ]
            d = asyncio.run(engine.decide(RouteRequest("chat", cands, messages=messages)))
            served["per turn"].append(d.chosen)
            for kind in served:
                here = served[kind]
                cost[kind] += turn_cost(messages, here[-1], len(here) > 1 and here[-1] == here[-2])
            messages = [
                *messages,
                {"role": "assistant", "content": reply.json()["choices"][0]["message"]["content"]},
            ]
        for kind, seq in served.items():
            switches = sum(a != b for a, b in itertools.pairwise(seq))
            n, total = results[kind]
            results[kind] = (n + switches, total + cost[kind])
    engine.close()
    (s_sw, s_cost), (p_sw, p_cost) = results["sticky"], results["per turn"]
    print(
        f"\n20 five-turn conversations: switches {s_sw} sticky vs {p_sw} per turn "
        f"({s_sw / 20:.2f} vs {p_sw / 20:.2f} per conversation); cost with cached input "
        f"${s_cost:.4f} vs ${p_cost:.4f}"
    )
    assert p_sw > 0 and s_sw < p_sw  # the mixed topics bounce a per-turn router
    with_reason = [
        r for r in records(proxy["log"], 100) if "sticky:" in (r["decision"].get("rule") or "")
    ]
    assert with_reason  # the decisions say why they stayed or left
