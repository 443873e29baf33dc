"""How RouteIQ's inline decision path behaves next to a busy thread (the GIL hand-over cost).

In a LiteLLM process the event loop shares the GIL with worker threads (mock and sync
completions, logging). Every time the loop thread releases the GIL (numpy does for sorts,
``take``, row gathers and for ufuncs over more than 500 elements), a busy thread may keep it
for up to the 5 ms switch interval, and the event loop stalls. This bench times each stage of
the inline path alone and next to one thread spinning pure Python, one call at a time:

    .venv/bin/python bench/gil_contention.py [--router PATH] [--n 300]

A stage that never drops the GIL is at most about 2x slower with the spinner (the spinner
forces a hand-over every 5 ms of interpreter time); one that drops it is 10-1000x slower.
Without ``--router`` the demo router (lexical featurizer + logistic) is trained in a temporary
directory. Prompts: the demo prompts (~80 characters) and ~2,000-character ones.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from routeiq.data.loaders import load_dataset
from routeiq.decision.exploration import Exploration, draw
from routeiq.decision.rules import decide
from routeiq.features.lexical import LexicalFeaturizer
from routeiq.integrations.litellm.demo import build_demo_router, demo_prompts
from routeiq.router import Candidate, LearnedRouter
from routeiq.serving.engine import DecisionEngine, RouteRequest
from routeiq.serving.registry import RouterRegistry, load_routers
from routeiq.serving.settings import RouteIQSettings


class Spinner:
    """A thread running pure Python until stopped (holds the GIL whenever it can)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            for _ in range(1000):
                n += 1

    def __enter__(self) -> Spinner:
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timings(op: Callable[[str], object], texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        t0 = time.perf_counter()
        op(text)
        out.append(time.perf_counter() - t0)
    return sorted(out)


def row(name: str, idle: list[float], busy: list[float]) -> str:
    def q(v: list[float], p: float) -> float:
        return 1e6 * v[min(len(v) - 1, round(p * (len(v) - 1)))]

    mi, mb = 1e6 * statistics.fmean(idle), 1e6 * statistics.fmean(busy)
    return (
        f"{name:22s} {q(idle, 0.5):9.1f} {mi:9.1f} {q(idle, 0.99):9.1f}   "
        f"{q(busy, 0.5):9.1f} {mb:9.1f} {q(busy, 0.99):9.1f}   {mb / mi:7.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--router", type=Path, help="router artifact (default: the demo one)")
    parser.add_argument("--n", type=int, default=300, help="prompts per length")
    parser.add_argument(
        "--data",
        type=Path,
        help="also time a lexical featurizer fitted on this dataset's first 3,000 prompts, on "
        "its 200 longest other prompts (a real vocabulary: ~30k buckets)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.router
        if path is None:
            path = Path(tmp) / "router"
            build_demo_router(path)
        learned = LearnedRouter.load(path)
        base, _ = demo_prompts(seed=1)
        short = [f"{base[i % len(base)]} (request {i})" for i in range(args.n)]
        long = [(" ".join(base[i % len(base) :]) * 4)[:2000] + f" ({i})" for i in range(args.n)]
        models = list(learned.models_)[:2]
        cands = [Candidate(name=f"d{i}", model=m, cost=None) for i, m in enumerate(models)]
        names = [c.name for c in cands]
        resolved = learned.score(short[0], cands)
        explore = Exploration(mode="epsilon", margin=1.0, max_cost_ratio=1e6)
        settings = RouteIQSettings.model_validate({"router": str(path)})
        engine = DecisionEngine(settings, RouterRegistry(load_routers(settings)))

        def engine_decide(text: str) -> object:
            # Driven without an event loop: the inline path never suspends, and a loop's own
            # poll (a syscall, which drops the GIL) is not RouteIQ's cost.
            request = RouteRequest(
                group="chat", candidates=cands, messages=[{"role": "user", "content": text}]
            )
            coro = engine.decide(request)
            try:
                coro.send(None)
            except StopIteration as done:
                return done.value
            coro.close()
            raise RuntimeError("the inline decision suspended")

        stages: dict[str, Callable[[str], object]] = {
            "featurize": lambda t: learned.featurizer.transform([t]),
            "score (feat+predict)": lambda t: learned.score(t, cands),
            "decide (kernel)": lambda t: decide(
                names, models, resolved.quality, resolved.cost, learned.lam
            ),
            "decide (exploring)": lambda t: decide(
                names,
                models,
                resolved.quality,
                resolved.cost,
                learned.lam,
                exploration=explore,
                u=draw(0, t, learned.digest),
            ),
            "engine.decide (all)": engine_decide,
        }
        print(
            f"router {learned.digest[:12]}: {learned.featurizer.name} featurizer; "
            f"{args.n} prompts per length; times in microseconds\n"
        )
        print(f"{'':22s} {'idle':>29s}   {'next to a busy thread':>29s}")
        print(
            f"{'stage':22s} {'p50':>9s} {'mean':>9s} {'p99':>9s}   "
            f"{'p50':>9s} {'mean':>9s} {'p99':>9s}   {'mean x':>7s}"
        )
        for label, texts in (("short", short), ("2000 chars", long)):
            for name, op in stages.items():
                timings(op, texts[:20])  # warm-up
                idle = timings(op, texts)
                with Spinner():
                    busy = timings(op, texts)
                print(row(f"{name} [{label}]", idle, busy))
        engine.close()
        if args.data is not None:
            dataset = load_dataset(args.data)
            texts = list(dataset.prompts)
            real = LexicalFeaturizer().fit(texts[:3000])
            tail = sorted(texts[3000:], key=len)[-200:]
            idle = timings(lambda t: real.transform([t]), tail)
            with Spinner():
                busy = timings(lambda t: real.transform([t]), tail)
            print(row(f"featurize [{args.data.stem[:12]}]", idle, busy))


if __name__ == "__main__":
    main()
