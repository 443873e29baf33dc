"""A real LiteLLM proxy started with no ``router:`` setting routes with the packaged default
router, over three deployments whose model names it has never seen (mapped by price tier).

One proxy (1 worker) for the module; marked ``slow`` like the other proxy tests. The SDK checks
at the end need no proxy.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("litellm.proxy.proxy_server", reason="litellm[proxy] is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")

from proxy_helpers import (  # noqa: E402
    free_port,
    log_lines,
    proxy_env,
    start_proxy,
    stop,
    wait_ready,
)
from routeiq.artifacts import artifact_digest  # noqa: E402
from routeiq.default_router import default_router_path  # noqa: E402
from routeiq.router import LearnedRouter  # noqa: E402

# LiteLLM's price map has gpt-4o but not this haiku name; a local model is free.
HAIKU_PRICE = {"input_cost_per_token": 8e-7, "output_cost_per_token": 4e-6}
FREE = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}
TIER_OF = {  # deployment id -> the default router's model its price maps it to
    "premium": "gpt-4-1106-preview",
    "mid": "gpt-3.5-turbo-1106",
    "local": "mistralai/mistral-7b-chat",
}
CODE = [
    "Write a python function to find the longest common prefix of a list of strings.",
    "Write a python function to check whether the given number is a perfect square or not.",
    "Write a function to remove all whitespaces from a string using regex.",
    "Write a python function to count the number of set bits in an integer.",
    "Write a function to merge two sorted lists into one sorted list.",
    "Write a python function to reverse the words in a given string.",
    "Write a function to find the maximum sum of a contiguous subarray.",
]
CHAT = [
    "Hi! How are you today?",
    "What's a good name for a golden retriever puppy?",
    "Tell me a fun fact about the ocean.",
    "Can you recommend a movie for tonight?",
    "Thanks, that was helpful!",
    "Good morning! Any plans for the weekend?",
    "I feel a bit tired today.",
]


def deployment(ident: str, model: str, price: dict[str, float]) -> dict[str, Any]:
    return {
        "model_name": "chat",
        "litellm_params": {"model": model, "api_key": "fake", "mock_response": ident, **price},
        "model_info": {"id": ident},
    }


def model_list() -> list[dict[str, Any]]:
    return [
        deployment("premium", "openai/gpt-4o", {}),  # priced by LiteLLM's own map
        deployment("mid", "anthropic/claude-3-5-haiku", HAIKU_PRICE),
        deployment("local", "hosted_vllm/llama-3-8b", FREE),
    ]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("proxy-default")
    log = work / "decisions.jsonl"
    config = work / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": model_list(),
                "router_settings": {"num_retries": 0},
                "litellm_settings": {
                    "callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback"]
                },
                # No router: the packaged default. lambda: the operator's price knob (the
                # artifact's own, calibrated on RouterBench's prices, favours the premium tier).
                "routeiq_settings": {"lambda": 100.0, "decision_log": str(log)},
            }
        )
    )
    key = "sk-" + secrets.token_hex(16)
    out = work / "proxy.log"
    port = free_port()
    proc = start_proxy(config, 1, out, proxy_env(key), port)
    try:
        wait_ready(proc, out, 1)
        yield {"url": f"http://127.0.0.1:{port}", "key": key, "log": log}
    finally:
        stop(proc)


def post(proxy: dict[str, Any], text: str) -> Any:
    with httpx.Client(timeout=60) as client:
        return client.post(
            f"{proxy['url']}/v1/chat/completions",
            headers={"Authorization": f"Bearer {proxy['key']}"},
            json={"model": "chat", "messages": [{"role": "user", "content": text}]},
        )


@pytest.mark.slow
def test_no_router_setting_routes_with_the_packaged_default(proxy: dict[str, Any]) -> None:
    digest = artifact_digest(default_router_path())
    replies = {text: post(proxy, text) for text in CODE + CHAT}
    for text, reply in replies.items():
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-routeiq-router"] == digest, text
        assert reply.headers["x-routeiq-outcome"] == "routed", text
        # The deployment RouteIQ chose is the one that answered.
        answered = reply.json()["choices"][0]["message"]["content"]
        assert answered == reply.headers["x-routeiq-deployment"], text
    # Each deployment got the prediction of the tier its price maps it to (in the proxy).
    default = LearnedRouter.load(default_router_path())
    records = {r["id"]: r for r in log_lines(proxy["log"], len(replies))}
    for text, reply in replies.items():
        record = records[reply.headers["x-routeiq-decision-id"]]
        assert record["decision"]["router"] == digest
        predicted = dict(zip(default.models_, default.predict_quality([text])[0], strict=True))
        logged = {c["deployment"]: c["predicted_quality"] for c in record["decision"]["candidates"]}
        assert logged == pytest.approx({d: predicted[m] for d, m in TIER_OF.items()}), text

    code = Counter(replies[t].headers["x-routeiq-deployment"] for t in CODE)
    chat = Counter(replies[t].headers["x-routeiq-deployment"] for t in CHAT)
    print(f"code prompts -> {dict(code)}; chat prompts -> {dict(chat)}")
    # Short Python tasks go to the mid tier (on RouterBench gpt-3.5 matches gpt-4 on MBPP);
    # chit-chat, unlike any benchmark prompt, mostly elsewhere.
    assert code.most_common(1)[0][0] == "mid"
    assert chat.most_common(1)[0][0] != "mid"
    assert chat["mid"] < code["mid"]


# -------------------------------------------------------------------- SDK: no proxy needed


def test_sdk_install_without_a_router_routes_unseen_names_by_price() -> None:
    from litellm import Router

    from routeiq.integrations.litellm import RouteIQSettings, install, uninstall

    router = Router(model_list=model_list())
    strategy = install(router, RouteIQSettings(), register_callback=False)
    try:
        assert strategy.engine.unrouted == frozenset()  # not the shuffle rule
        learned = strategy.engine.registry.for_group(strategy.engine.group("chat"))
        assert learned.digest == artifact_digest(default_router_path())
    finally:
        uninstall(router, strategy)


def test_sdk_unpriced_unseen_deployments_get_the_shuffle_rule() -> None:
    from litellm import Router

    from routeiq.integrations.litellm import RouteIQSettings, install, uninstall

    unpriced = [
        deployment("a", "hosted_vllm/mystery-a", {}),
        deployment("b", "hosted_vllm/mystery-b", {}),
    ]
    router = Router(model_list=unpriced)
    strategy = install(router, RouteIQSettings(), register_callback=False)
    try:  # nothing to place them by: no known name, no price
        assert strategy.engine.unrouted == frozenset({"chat"})
    finally:
        uninstall(router, strategy)


def test_sdk_router_none_refuses_route_mode_but_cheapest_works() -> None:
    from litellm import Router

    from routeiq.integrations.litellm import RouteIQConfigError, RouteIQSettings, install, uninstall

    router = Router(model_list=model_list())
    with pytest.raises(RouteIQConfigError, match=r"has no router artifact \(router: none\)"):
        install(router, RouteIQSettings.model_validate({"router": "none"}))
    strategy = install(
        router,
        RouteIQSettings.model_validate({"router": "none", "mode": "cheapest"}),
        register_callback=False,
    )
    try:
        assert strategy.engine.registry.paths() == {}
    finally:
        uninstall(router, strategy)
