"""Cedar policy decision latency: what RouteIQ adds per request and per candidate set.

    python bench/policy_latency.py [--calls 5000] [--rounds 5] [--callers 50]

Times, with the example policies and schema (``examples/policies``):

* ``request check``: :meth:`PolicyEngine.authorize_request` (the proxy's pre-call deny check),
  parsed policy set and cached caller entities reused;
* ``filter N candidates``: :meth:`PolicyEngine.authorize_candidates` (the guard, one Cedar
  batch call per decision) for 2 and 8 candidates;
* ``guard.exclude, 2 candidates``: the guard as the decision engine calls it (context built);
* ``first call per caller``: the entity cache missing (a new key);
* ``from strings``: ``cedarpy.is_authorized`` with the policy text and entity JSON parsed on
  every call (what pre-parsing avoids).

``--callers`` distinct identities rotate, so the entity cache holds several callers. Rounds
rotate the rows so machine noise spreads evenly. Prints p50/p99 in microseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import cedarpy

from routeiq.router import Candidate
from routeiq.security.policy import PolicyEngine, PolicyGuard, principal_entities
from routeiq.serving.engine import RouteRequest
from routeiq.serving.feedback import Identity

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policies"
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3-70b", "mistral-7b"]


def candidates(n: int) -> list[Candidate]:
    return [Candidate(f"dep-{i}", MODELS[i % len(MODELS)], 1e-5 * (i + 1) ** 3) for i in range(n)]


def timed(fn: Callable[[int], object], calls: int) -> list[float]:
    out = []
    for i in range(calls):
        started = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - started)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--callers", type=int, default=50)
    args = ap.parse_args()

    policy_file, schema_file = EXAMPLE / "policies.cedar", EXAMPLE / "schema.cedarschema"
    engine = PolicyEngine.from_files(policy_file, schema_file)
    guard = PolicyGuard(engine)
    teams = ["team-a", "team-b"]
    callers = [
        Identity(key_hash=f"hash-{i}", team_id=teams[i % 2], user_id=f"user-{i}")
        for i in range(args.callers)
    ]
    two, eight = candidates(2), candidates(8)
    ctx = engine.context(["batch"], 120, False)
    text = policy_file.read_text()
    messages = [{"role": "user", "content": "hello"}]
    requests = [
        RouteRequest("chat", two, messages=messages, identity=c, tags=("batch",), input_tokens=120)
        for c in callers
    ]
    fresh = {"n": 0}

    def first_call(i: int) -> object:
        fresh["n"] += 1  # a key the cache has not seen
        who = Identity(key_hash=f"new-{fresh['n']}", team_id="team-b")
        return engine.authorize_request(who, "completion", "chat", ctx)

    def from_strings(i: int) -> object:
        who = callers[i % len(callers)]
        entities = principal_entities(who)
        request = {
            "principal": {"type": "Key", "id": who.key_hash},
            "action": {"type": "Action", "id": "completion"},
            "resource": {"type": "ModelGroup", "id": "chat"},
            "context": ctx,
        }
        return cedarpy.is_authorized(request, text, json.dumps(entities))

    rows: dict[str, Callable[[int], object]] = {
        "request check": lambda i: engine.authorize_request(
            callers[i % len(callers)], "completion", "chat", ctx
        ),
        "filter 2 candidates": lambda i: engine.authorize_candidates(
            callers[i % len(callers)], "completion", "chat", two, ctx
        ),
        "filter 8 candidates": lambda i: engine.authorize_candidates(
            callers[i % len(callers)], "completion", "chat", eight, ctx
        ),
        "guard.exclude, 2 candidates": lambda i: guard.exclude(requests[i % len(requests)], two),
        "first call per caller (cache miss)": first_call,
        "request check from strings (no handles)": from_strings,
    }
    for fn in rows.values():  # warm up: caches filled, code paths loaded
        timed(fn, 200)
    samples: dict[str, list[float]] = {name: [] for name in rows}
    names = list(rows)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name] += timed(rows[name], args.calls)

    print(
        f"\ncedarpy {version('cedarpy')}; {len(engine.source.statements)} "
        f"policies; {args.calls} calls x {args.rounds} rounds; {args.callers} callers"
    )
    print("| operation | p50 us | p99 us | mean us |\n|---|---|---|---|")
    for name, values in samples.items():
        p50, p99, mean = pct(values, 0.5), pct(values, 0.99), statistics.fmean(values)
        print(f"| {name} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} | {mean * 1e6:.0f} |")


if __name__ == "__main__":
    main()
