"""Cedar policies on a real 2-worker LiteLLM proxy, on identities from LiteLLM's own auth.

``custom_auth`` maps key A to team-a, key B to team-b and key C to no team. The policies
permit teams a and b, keep team-b off GPT-4o deployments and out of model group "premium";
key C is denied by Cedar's default. The tests run against one proxy: refusals (403 with the
policy id, before routing and after every deployment was filtered), spoofed team claims,
50 routed requests, metrics; and the config checker refusing a typo with its line.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from proxy_helpers import require_litellm_proxy

require_litellm_proxy()
httpx = pytest.importorskip("httpx", reason="httpx is not installed")
yaml = pytest.importorskip("yaml", reason="pyyaml is not installed")

from litellm_helpers import CHEAP_PRICE, CODE, STRONG_PRICE, deployment  # noqa: E402
from proxy_helpers import (  # noqa: E402
    REPO,
    counter_total,
    free_port,
    log_lines,
    proxy_env,
    start_proxy,
    stop,
    wait_ready,
)

pytestmark = pytest.mark.slow

KEY_A, KEY_B, KEY_C = ("sk-" + n + "-" + secrets.token_hex(8) for n in ("a", "b", "c"))
SCHEMA = REPO / "examples" / "policies" / "schema.cedarschema"

CUSTOM_AUTH = """
from litellm.proxy._types import UserAPIKeyAuth

KEYS = {KEYS!r}


async def user_api_key_auth(request, api_key):
    if api_key in KEYS:
        team, user = KEYS[api_key]
        return UserAPIKeyAuth(api_key=api_key, team_id=team, user_id=user)
    raise Exception("unknown API key")
"""

POLICIES = """\
@id("team-a")
permit(principal in Team::"team-a", action, resource);

@id("team-b")
permit(principal in Team::"team-b", action, resource);

@id("forbid-team-b-gpt4o")
forbid(principal in Team::"team-b", action, resource is Deployment)
when { resource.model == "gpt-4o" };

@id("forbid-team-b-premium")
forbid(principal in Team::"team-b", action, resource in ModelGroup::"premium");
"""


def proxy_config(artifact: Path, log: Path) -> dict:
    return {
        "model_list": [
            deployment("chat", "strong", "gpt-4o", STRONG_PRICE, "strong says hi"),
            deployment("chat", "cheap", "gpt-4o-mini", CHEAP_PRICE, "cheap says hi"),
            deployment("premium", "premium-strong", "gpt-4o", STRONG_PRICE, "premium"),
            deployment("solo", "solo-strong", "gpt-4o", STRONG_PRICE, "solo"),
        ],
        "router_settings": {"num_retries": 1},
        "general_settings": {"custom_auth": "custom_auth.user_api_key_auth"},
        "litellm_settings": {
            "callbacks": ["routeiq.integrations.litellm.proxy.routeiq_callback", "prometheus"]
        },
        "routeiq_settings": {
            "router": str(artifact),
            "lambda": 20.0,
            "decision_log": str(log),
            "policies": {"file": "./policies.cedar", "schema": str(SCHEMA)},
        },
    }


@pytest.fixture(scope="module")
def launched(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The proxy, started (its workers may still be booting)."""
    work = tmp_path_factory.mktemp("proxy-policy")
    keys = {KEY_A: ("team-a", "alice"), KEY_B: ("team-b", "bob"), KEY_C: (None, "carol")}
    (work / "custom_auth.py").write_text(CUSTOM_AUTH.replace("{KEYS!r}", repr(keys)))
    (work / "policies.cedar").write_text(POLICIES)
    log, config = work / "decisions.jsonl", work / "config.yaml"
    config.write_text(yaml.safe_dump(proxy_config(artifact, log)))
    port, out, metrics = free_port(), work / "proxy.log", work / "metrics"
    master = "sk-master-" + secrets.token_hex(8)
    proc = start_proxy(config, 2, out, proxy_env(master, metrics), port)
    try:
        yield {
            "proc": proc,
            "url": f"http://127.0.0.1:{port}",
            "work": work,
            "config": config,
            "log": log,
            "out": out,
            "metrics": metrics,
        }
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def stack(launched: dict) -> dict:
    wait_ready(launched["proc"], launched["out"], 2)
    return launched


def chat(stack: dict, key: str, model: str = "chat", text: str = CODE, **extra: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    headers.update(extra.pop("headers", {}))
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    with httpx.Client(timeout=60) as client:
        return client.post(f"{stack['url']}/v1/chat/completions", headers=headers, json=body)


def many(fn: Any, args: list) -> list:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda a: fn(*a), args))


def error_of(reply: Any) -> dict:
    body = reply.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    assert body["error"]["code"] == str(reply.status_code)
    return body["error"]


# Claims a client could make to pass for team-a (none may count: identity is LiteLLM's auth).
SPOOF_HEADERS = {"x-team-id": "team-a", "x-litellm-team-id": "team-a", "x-user-id": "alice"}
SPOOF_METADATA = {
    "team_id": "team-a",
    "user_api_key_team_id": "team-a",
    "routeiq_identity": {"owner": "guess", "team_id": "team-a", "key_hash": "x"},
}


# -- while the workers boot ----------------------------------------------------------------------


def test_config_with_a_policy_typo_is_refused_with_its_line(launched: dict) -> None:
    work = launched["work"] / "typo"
    work.mkdir()
    shutil.copy(launched["work"] / "custom_auth.py", work)
    typo = POLICIES.replace("resource.model ==", "resource.modle ==")
    (work / "policies.cedar").write_text(typo)
    config = yaml.safe_load(launched["config"].read_text())
    (work / "config.yaml").write_text(yaml.safe_dump(config))

    def check(path: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "routeiq.integrations.litellm.proxy", str(path)]
        env = proxy_env("sk-unused")
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)

    # The typo'd config and the good one (which passes), checked side by side.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done, ok = pool.map(check, [work / "config.yaml", launched["config"]])
    line = next(i for i, t in enumerate(typo.splitlines(), 1) if "modle" in t)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"policies.cedar:{line}: policy forbid-team-b-gpt4o:" in done.stderr, done.stderr
    assert "modle" in done.stderr
    assert ok.returncode == 0, ok.stderr


def test_refusals_map_to_litellm_403_errors() -> None:
    import litellm
    from litellm.proxy._types import ProxyException

    from routeiq.integrations.litellm.request_fields import refusal_error
    from routeiq.security.policy import AllCandidatesDenied
    from routeiq.security.policy_proxy import deny_by_policy

    err = refusal_error(AllCandidatesDenied("every deployment ... denied", ["p"]), "chat")
    assert isinstance(err, litellm.PermissionDeniedError) and err.status_code == 403
    assert deny_by_policy(object(), None, {"model": "chat"}, "acompletion") is None  # no policy
    assert isinstance(ProxyException("m", "permission_error", None, 403).code, str)


# -- against the proxy ---------------------------------------------------------------------------


def test_a_denied_request_is_a_403_naming_the_policy(stack: dict) -> None:
    denied = chat(stack, KEY_B, "premium")
    assert denied.status_code == 403, denied.text
    err = error_of(denied)
    assert "forbid-team-b-premium" in err["message"] and err["type"] == "permission_error"
    assert chat(stack, KEY_A, "premium").status_code == 200  # team-a may
    nobody = chat(stack, KEY_C)  # no team: no permit matches, Cedar's default deny
    assert nobody.status_code == 403 and "default deny" in error_of(nobody)["message"]


def test_every_deployment_filtered_is_a_403_not_a_500(stack: dict) -> None:
    # The group check passes; the group's only deployment is GPT-4o, forbidden to team-b.
    denied = chat(stack, KEY_B, "solo")
    assert denied.status_code == 403, denied.text
    message = error_of(denied)["message"]
    assert "every deployment of model group 'solo' was denied" in message
    assert "forbid-team-b-gpt4o" in message
    assert chat(stack, KEY_A, "solo").status_code == 200


def test_spoofed_team_claims_change_nothing(stack: dict) -> None:
    for model in ("premium", "solo"):
        spoofed = chat(stack, KEY_B, model, headers=SPOOF_HEADERS, metadata=SPOOF_METADATA)
        assert spoofed.status_code == 403, spoofed.text
    served = chat(stack, KEY_B, headers=SPOOF_HEADERS, metadata=SPOOF_METADATA, user="alice")
    assert served.status_code == 200 and served.headers["x-litellm-model-id"] == "cheap"
    anonymous = chat(stack, KEY_C, headers=SPOOF_HEADERS, metadata=SPOOF_METADATA)
    assert anonymous.status_code == 403


def test_a_restricted_team_is_never_routed_to_the_forbidden_deployment(stack: dict) -> None:
    texts = [f"{CODE} Case {i}." for i in range(50)]
    replies = many(chat, [(stack, KEY_B, "chat", t) for t in texts])
    assert [r.status_code for r in replies] == [200] * 50, [r.text for r in replies][:3]
    served = [r.headers["x-litellm-model-id"] for r in replies]
    assert set(served) == {"cheap"}
    assert {r.headers["x-routeiq-deployment"] for r in replies} == {"cheap"}
    # The same prompts from team-a go to GPT-4o: the policy, not the router, kept team-b off it.
    team_a = many(chat, [(stack, KEY_A, "chat", t) for t in texts[:10]])
    assert {r.headers["x-litellm-model-id"] for r in team_a} == {"strong"}

    ids = {r.headers["x-routeiq-decision-id"] for r in replies}
    records = [r for r in log_lines(stack["log"], 60) if r["id"] in ids and "decision" in r]
    assert len(records) == 50
    for rec in records:
        rows = {c["deployment"]: c for c in rec["decision"]["candidates"]}
        assert rows["strong"]["excluded"] == "policy: forbid-team-b-gpt4o", rows
        assert "excluded" not in rows["cheap"] and rec["decision"]["deployment"] == "cheap"


def test_policy_decisions_are_counted(stack: dict) -> None:
    total = {
        effect: counter_total(stack["metrics"], "routeiq_policy_decisions", effect=effect)
        for effect in ("allow", "deny", "filter")
    }
    print(f"routeiq_policy_decisions_total: {json.dumps(total)}")
    # 50 + 1 + 2 team-b chat requests had GPT-4o filtered; premium x2 + key C x2 denied.
    # Exact: a 403 from the strategy is not retried (num_retries: 1) nor counted twice.
    assert total["filter"] == 53 and total["deny"] == 4 and total["allow"] >= 60
    # Denied before routing: the only "premium" decisions are team-a's (1 + none spoofed).
    premium = counter_total(stack["metrics"], "routeiq_decisions", model_group="premium")
    assert premium == 1
