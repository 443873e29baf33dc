"""Cedar policies (routeiq.security.policy): loading with lines, deny, filter, default deny."""

from __future__ import annotations

import calendar
import logging
from pathlib import Path
from typing import Any

import pytest

from routeiq.router import Candidate
from routeiq.security.policy import (
    AllCandidatesDenied,
    PolicyConfigError,
    PolicyDenied,
    PolicyEngine,
    PolicyGuard,
    action_for_call_type,
)
from routeiq.security.policy_source import split_statements
from routeiq.serving import RouteRequest
from routeiq.serving.feedback import Identity
from routeiq.serving.guards import build_guards
from routeiq.serving.settings import RouteIQConfigError, RouteIQSettings
from routeiq.serving.settings_file import parse_settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "policies"
CODE = "Write a Python function that computes the median of a list, with tests."
# gpt-4o ~ $0.0026 per request (2,600 micro-USD), gpt-4o-mini ~ $0.00003 (30).
CANDS = (Candidate("strong", "gpt-4o", 0.0026), Candidate("cheap", "gpt-4o-mini", 0.00003))
TEAM_A = Identity(key_hash="hash-a", team_id="team-a", user_id="alice")
TEAM_B = Identity(key_hash="hash-b", team_id="team-b", user_id="bob")

POLICIES = """\
// Everyone may use everything, unless forbidden below.
@id("allow-all")
permit(principal, action, resource);

@id("forbid-team-b-gpt4o")
forbid(principal in Team::"team-b", action, resource is Deployment)
when { resource.model == "gpt-4o" };

@id("forbid-team-b-premium")
forbid(principal in Team::"team-b", action, resource in ModelGroup::"premium");
"""


def write(tmp_path: Path, text: str, name: str = "policies.cedar") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def engine_for(tmp_path: Path, text: str = POLICIES, **kwargs: Any) -> PolicyEngine:
    return PolicyEngine.from_files(write(tmp_path, text), **kwargs)


def chat_request(identity: Identity | None, **kwargs: Any) -> RouteRequest:
    kwargs.setdefault("candidates", CANDS)
    return RouteRequest(
        group="chat",
        messages=[{"role": "user", "content": CODE}],
        identity=identity,
        **kwargs,
    )


# -- loading: every problem names the file and line --------------------------------------------


def test_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    text = POLICIES.replace("when { resource.model", "whn { resource.model")
    path = write(tmp_path, text)
    with pytest.raises(PolicyConfigError) as err:
        PolicyEngine.from_files(path)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("whn"))
    assert f"{path}:{line}: Cedar syntax error" in str(err.value)
    assert "whn" in str(err.value)
    assert isinstance(err.value, RouteIQConfigError)  # start-up refuses it like any setting


def test_a_misspelt_attribute_fails_schema_validation_with_its_line(tmp_path: Path) -> None:
    text = POLICIES.replace("resource.model ==", "resource.modle ==")
    path = write(tmp_path, text)
    with pytest.raises(PolicyConfigError) as err:
        PolicyEngine.from_files(path, EXAMPLE / "schema.cedarschema")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "modle" in t)
    message = str(err.value)
    assert f"{path}:{line}: policy forbid-team-b-gpt4o:" in message
    assert "modle" in message
    # Without a schema the same file parses: only the schema knows attribute names.
    PolicyEngine.from_files(path)


def test_a_misspelt_entity_type_and_action_fail_validation(tmp_path: Path) -> None:
    text = (
        POLICIES
        + '\n@id("x")\nforbid(principal in Teem::"t", action == Action::"chatt", resource);\n'
    )
    path = write(tmp_path, text)
    with pytest.raises(PolicyConfigError) as err:
        PolicyEngine.from_files(path, EXAMPLE / "schema.cedarschema")
    assert f"{path}:{len(text.splitlines())}: policy x:" in str(err.value)


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigError, match="Cedar policy file not found"):
        PolicyEngine.from_files(tmp_path / "missing.cedar")
    with pytest.raises(PolicyConfigError, match="no policies"):
        engine_for(tmp_path, "// nothing here\n")
    schema = write(tmp_path, "entity Key { team: Strng };", "bad.cedarschema")
    with pytest.raises(PolicyConfigError, match="invalid Cedar schema"):
        PolicyEngine.from_files(write(tmp_path, POLICIES), schema)
    dup = POLICIES + '\n@id("allow-all")\npermit(principal, action, resource);\n'
    with pytest.raises(
        PolicyConfigError, match=r"policies.cedar:\d+: @id\('allow-all'\) is already"
    ):
        engine_for(tmp_path, dup)


def test_statements_split_like_cedar_numbers_them() -> None:
    text = (
        '// a comment; with a semicolon\n@id("one")\npermit(principal, action, resource)\n'
        'when { context.tags.contains("a;b") };\n\n\nforbid(principal, action, resource);'
    )
    one, two = split_statements(text)
    assert (one.line, one.annotation, two.line, two.annotation) == (2, "one", 7, None)


def test_the_example_policies_validate_against_the_example_schema() -> None:
    engine = PolicyEngine.from_files(EXAMPLE / "policies.cedar", EXAMPLE / "schema.cedarschema")
    assert "forbid-team-b-gpt4o" in engine.source.names.values()


# -- the deny effect ----------------------------------------------------------------------------


def test_a_denied_request_names_the_deciding_policy(tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    denied = engine.authorize_request(TEAM_B, "completion", "premium")
    assert not denied.allowed and denied.policies == ("forbid-team-b-premium",)
    assert denied.reason == "policy: forbid-team-b-premium"
    assert engine.authorize_request(TEAM_A, "completion", "premium").allowed
    assert engine.authorize_request(TEAM_B, "completion", "chat").allowed
    with pytest.raises(PolicyDenied, match="denied by policy: forbid-team-b-premium") as err:
        engine.check_request(TEAM_B, "completion", "premium")
    assert err.value.status_code == 403 and err.value.policies == ("forbid-team-b-premium",)


def test_default_deny_when_no_permit_matches(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path, '@id("team-a-only")\npermit(principal in Team::"team-a", action, resource);'
    )
    assert engine.authorize_request(TEAM_A, "completion", "chat").allowed
    for who in (TEAM_B, Identity(), None):  # another team, no team, no auth at all
        decision = engine.authorize_request(who, "completion", "chat")
        assert not decision.allowed and decision.policies == ()
        assert decision.reason == "policy: default deny (no permit matched)"


def test_principal_hierarchy_and_attributes(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        "permit(principal, action, resource);\n"
        '@id("org")\nforbid(principal in Org::"acme", action == Action::"embedding", resource);\n'
        '@id("alias")\nforbid(principal, action, resource)\n'
        '  when { principal has alias && principal.alias == "batch" };\n'
        '@id("user")\nforbid(principal in User::"mallory", action, resource);\n'
        '@id("admin-only")\nforbid(principal, action, resource == ModelGroup::"ops")\n'
        '  unless { principal has role && principal.role == "proxy_admin" };\n',
    )
    in_org = Identity(key_hash="k", team_id="t9", org_id="acme")  # Key in Team in Org
    assert engine.authorize_request(in_org, "embedding", "e").policies == ("org",)
    assert engine.authorize_request(in_org, "completion", "e").allowed
    batch = Identity(key_hash="k2", key_alias="batch")
    assert engine.authorize_request(batch, "completion", "chat").policies == ("alias",)
    assert engine.authorize_request(Identity(user_id="mallory"), "completion", "c").policies == (
        "user",
    )
    assert not engine.authorize_request(TEAM_A, "completion", "ops").allowed
    admin = Identity(key_hash="m", role="proxy_admin")
    assert engine.authorize_request(admin, "completion", "ops").allowed


def test_context_tags_tokens_stream_and_hour(tmp_path: Path) -> None:
    noon = calendar.timegm((2026, 12, 7, 12, 0, 0))  # a Monday
    now = {"t": float(noon)}
    engine = engine_for(
        tmp_path,
        "permit(principal, action, resource);\n"
        '@id("night")\nforbid(principal, action, resource) when { context.hour < 6 };\n'
        '@id("long")\nforbid(principal, action, resource)\n'
        '  when { context.input_tokens > 1000 && !context.tags.contains("long") };\n'
        '@id("no-stream-weekend")\nforbid(principal, action, resource)\n'
        "  when { context.stream && context.weekday >= 5 };\n",
        clock=lambda: now["t"],
    )
    ctx = engine.context(["x"], 10, False)
    assert (ctx["hour"], ctx["weekday"]) == (12, 0)
    assert engine.authorize_request(TEAM_A, "completion", "chat", ctx).allowed
    long_ctx = engine.context(["x"], 5000, False)
    assert engine.authorize_request(TEAM_A, "completion", "chat", long_ctx).policies == ("long",)
    assert engine.authorize_request(
        TEAM_A, "completion", "chat", engine.context(["long"], 5000)
    ).allowed
    now["t"] = noon - 8 * 3600.0  # 04:00
    assert engine.authorize_request(TEAM_A, "completion", "chat").policies == ("night",)
    now["t"] = noon + 5 * 86400.0  # Saturday noon
    assert engine.authorize_request(
        TEAM_A, "completion", "c", engine.context(stream=True)
    ).policies == ("no-stream-weekend",)


# -- the filter effect --------------------------------------------------------------------------


def test_candidates_are_filtered_by_model_and_group(tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    out = engine.authorize_candidates(TEAM_B, "completion", "chat", CANDS)
    assert not out["strong"].allowed and out["strong"].reason == "policy: forbid-team-b-gpt4o"
    assert out["cheap"].allowed
    assert all(
        d.allowed for d in engine.authorize_candidates(TEAM_A, "completion", "chat", CANDS).values()
    )
    # A group-level forbid covers the group's deployments too (Deployment in ModelGroup).
    premium = engine.authorize_candidates(TEAM_B, "completion", "premium", CANDS)
    assert {d.reason for d in premium.values()} >= {"policy: forbid-team-b-premium"}


def test_cost_ceiling_per_candidate(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        "permit(principal, action, resource);\n"
        '@id("ceiling")\nforbid(principal in Team::"team-a", action, resource is Deployment)\n'
        "  unless { context has cost_micro_usd && context.cost_micro_usd <= 1000 };\n",
    )
    cands = (
        Candidate("at", "m", 0.001),  # exactly the ceiling: allowed
        Candidate("over", "m", 0.0010011),
        Candidate("unknown", "m", None),  # no price: the policy excludes it too
        Candidate("inf", "m", float("inf")),
        Candidate("cheap", "m", 1e-7),
    )
    out = engine.authorize_candidates(TEAM_A, "completion", "chat", cands)
    assert {n for n, d in out.items() if d.allowed} == {"at", "cheap"}
    assert out["over"].reason == "policy: ceiling"
    assert all(
        d.allowed for d in engine.authorize_candidates(TEAM_B, "completion", "chat", cands).values()
    )


def test_evaluation_errors_skip_the_policy_and_are_logged(tmp_path: Path, metrics, caplog) -> None:
    # cost_micro_usd is absent on a group-level request: the forbid errors and is skipped.
    engine = engine_for(
        tmp_path,
        'permit(principal, action, resource);\n@id("bad")\n'
        "forbid(principal, action, resource) when { context.cost_micro_usd > 5 };\n",
        metrics=metrics,
    )
    with caplog.at_level(logging.WARNING):
        decision = engine.authorize_request(TEAM_A, "completion", "chat")
    assert decision.allowed and decision.errors
    assert "evaluation error, policy skipped" in caplog.text
    assert metrics.policy_decisions.labels("error")._value.get() == 1


# -- in the decision engine ---------------------------------------------------------------------


def settings_with(tmp_path: Path, text: str = POLICIES, **extra: Any) -> dict[str, Any]:
    write(tmp_path, text)
    return {"policies": {"file": str(tmp_path / "policies.cedar")}, **extra}


async def test_the_guard_excludes_forbidden_deployments_in_decisions(
    make_engine, tmp_path, metrics
) -> None:
    engine = make_engine(settings_with(tmp_path))
    assert any(isinstance(g, PolicyGuard) for g in engine.guards.all)
    a = await engine.decide(chat_request(TEAM_A))
    assert a.chosen == "strong"  # the router picks gpt-4o for code when allowed
    b = await engine.decide(chat_request(TEAM_B))
    assert b.chosen == "cheap"
    strong = next(r for r in b.candidates if r.name == "strong")
    assert strong.available is False and strong.excluded == "policy: forbid-team-b-gpt4o"
    assert "excluded strong" in b.rule
    assert metrics.policy_decisions.labels("filter")._value.get() == 1
    assert metrics.policy_decisions.labels("allow")._value.get() == 3


async def test_every_deployment_denied_is_a_403_refusal(make_engine, tmp_path, metrics) -> None:
    engine = make_engine(settings_with(tmp_path))
    with pytest.raises(AllCandidatesDenied) as err:
        await engine.decide(RouteRequest(group="premium", candidates=CANDS, identity=TEAM_B))
    assert err.value.status_code == 403
    assert "every deployment of model group 'premium' was denied" in str(err.value)
    assert "strong: policy: forbid-team-b-gpt4o, forbid-team-b-premium" in str(err.value)
    assert set(err.value.policies) == {"forbid-team-b-gpt4o", "forbid-team-b-premium"}
    assert metrics.rejections.labels("premium", "AllCandidatesDenied")._value.get() == 1
    # A pinned deployment is checked too.
    with pytest.raises(AllCandidatesDenied):
        await engine.decide(chat_request(TEAM_B, candidates=CANDS[:1], pinned=True))


async def test_embeddings_are_their_own_action(make_engine, tmp_path) -> None:
    text = 'permit(principal, action == Action::"completion", resource);'
    engine = make_engine(settings_with(tmp_path, text, mode="cheapest"))
    with pytest.raises(AllCandidatesDenied, match="default deny"):
        await engine.decide(RouteRequest(group="e", candidates=CANDS, input="hi", identity=TEAM_A))
    assert (await engine.decide(chat_request(TEAM_A))).chosen == "cheap"


async def test_no_policy_file_allows_everything(make_engine) -> None:
    engine = make_engine()
    assert build_guards(engine.settings) == []
    assert (await engine.decide(chat_request(TEAM_B))).chosen == "strong"


def test_settings_resolve_paths_and_refuse_unknown_keys(tmp_path: Path) -> None:
    settings = parse_settings(
        {"policies": {"file": "p.cedar", "schema": "s.cedarschema"}}, base_dir=tmp_path
    )
    assert settings.policies is not None
    assert settings.policies.file == tmp_path / "p.cedar"
    assert settings.policies.schema_file == tmp_path / "s.cedarschema"
    with pytest.raises(RouteIQConfigError, match=r"policies\.shema"):
        parse_settings({"policies": {"file": "p.cedar", "shema": "x"}})
    with pytest.raises(PolicyConfigError, match="not found"):
        build_guards(
            RouteIQSettings.model_validate({"policies": {"file": str(tmp_path / "p.cedar")}})
        )


@pytest.mark.parametrize(
    ("call_type", "action"),
    [
        ("acompletion", "completion"),
        ("completion", "completion"),
        ("atext_completion", "completion"),
        ("aresponses", "completion"),
        ("anthropic_messages", "completion"),
        ("aembedding", "embedding"),
        ("embeddings", "embedding"),
        ("aimage_generation", "image_generation"),
        ("atranscription", "transcription"),
        (None, "completion"),
    ],
)
def test_call_types_map_to_actions(call_type: str | None, action: str) -> None:
    assert action_for_call_type(call_type) == action
