"""Online learning on both shared datasets: the README tables for warm, cold, shift, budget.

    python bench/online_learning.py [--datasets ../shared/datasets] [--out results/online]
        [--seeds 10] [--quick-seeds 5] [--quality-model ensemble] [--lambda 20] [--img DIR]
        [--online '{"adapt_split": true}']

Trains each dataset's router once and streams it through every scenario of
``routeiq simulate`` (same code: :mod:`routeiq.cli.simulate`), writes each scenario's
``simulate.json``/``simulate.png`` under ``--out`` and prints Markdown tables. ``--seeds``
runs warm and shift, ``--quick-seeds`` cold and budget. Shift: RouterBench trains on two
tasks and streams the third (every rotation); LLMRouter trains on seven tasks (one of each
kind) and streams the seven others.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from routeiq.cli.simulate import write_report
from routeiq.data.loaders import load_dataset
from routeiq.decision.exploration import Exploration
from routeiq.evaluation import simulate as sim
from routeiq.evaluation.runner import build_router
from routeiq.evaluation.scenarios import (
    build_stream,
    check_full_information,
    costliest_task,
    plan_scenario,
    run_seed,
    starting_spend,
)
from routeiq.online.router import OnlineSettings

DATASETS = {
    "routerbench": "routerbench/routerbench_0shot_arc_mbpp_winogrande.csv",
    "llmrouter": "llmrouter/llmrouter_dc_scores.csv",
}
LLM_TRAIN = [
    "arc_challenge",
    "commonsense_qa",
    "gsm8k",
    "mbpp",
    "mmlu",
    "natural_qa",
    "openbook_qa",
]


def _run(name, scenario, stream, lam, seeds, requests, window, out, args, **extra) -> dict:
    explore = Exploration(mode="epsilon", epsilon=args.epsilon, margin=args.margin)
    settings = OnlineSettings(enabled=True, **json.loads(args.online))
    budget = extra.get("budget")
    started = time.perf_counter()
    runs = [
        run_seed(
            stream,
            scenario,
            seed,
            lam=lam,
            requests=requests,
            window=window,
            exploration=explore,
            online=settings,
            budget=budget,
            expensive_task=extra.get("describe", {}).get("expensive_task"),
        )
        for seed in range(seeds)
    ]
    curves = sim.summarize(runs)
    summary = sim.scenario_summary(scenario, curves, runs, window, budget)
    config: dict[str, Any] = {
        "data": name,
        "streamed_rows": int(stream.quality.shape[0]),
        "models": list(stream.models),
        "scenario": scenario,
        "requests": requests,
        "window": window,
        "seeds": seeds,
        "lambda": lam,
        "quality_model": args.quality_model,
        "exploration": explore.model_dump(),
        "online": settings.model_dump(),
        **extra.get("describe", {}),
    }
    if budget is not None:
        config["budget_per_1000"] = budget.target
    report = {"config": config, "summary": summary, "curves": curves}
    write_report(out, report)
    print(f"  {scenario} ({out.name}): {time.perf_counter() - started:.0f} s", flush=True)
    for line in summary["lines"]:
        print("   ", line, flush=True)
    return report


def _dataset(name: str, args: argparse.Namespace) -> dict[str, dict]:
    path = Path(args.datasets) / DATASETS[name]
    dataset = load_dataset(path).labelled()
    check_full_information(dataset)

    def make():
        return build_router("lexical", args.quality_model, lam=args.lam)

    reports: dict[str, dict] = {}
    t = time.perf_counter()
    stream, lam = build_stream(dataset, plan_scenario(dataset, "warm"), make)
    print(f"{name}: trained on {len(dataset)} prompts in {time.perf_counter() - t:.0f} s")
    out = Path(args.out)
    wanted = set(args.scenarios.split(","))
    for scenario, seeds in (("warm", args.seeds), ("cold", args.quick_seeds)):
        if scenario in wanted:
            reports[scenario] = _run(
                name, scenario, stream, lam, seeds, 5000, 500, out / f"{name}-{scenario}", args
            )
    if "budget" in wanted:
        _budget(name, stream, lam, out, args, reports)
    if "shift" in wanted:
        _shift(name, dataset, make, lam, out, args, reports)
    return reports


def _budget(name, stream, lam, out, args, reports) -> None:
    task = costliest_task(stream, lam)
    plan = sim.Budget(target=starting_spend(stream, lam, task), lam=lam)
    reports["budget"] = _run(
        name,
        "budget",
        stream,
        lam,
        args.quick_seeds,
        10_000,
        1000,
        out / f"{name}-budget",
        args,
        budget=plan,
        describe={"expensive_task": task},
    )


def _shift(name, dataset, make, lam, out, args, reports) -> None:
    tasks = sorted(set(dataset.tasks))
    if name == "routerbench":
        splits = [[t for t in tasks if t != held] for held in tasks]
    else:
        splits = [LLM_TRAIN]
    for train in splits:
        shift_plan = plan_scenario(dataset, "shift", train_tasks=train)
        shifted, _ = build_stream(dataset, shift_plan, make)
        label = "+".join(shift_plan.stream_tasks) if name == "routerbench" else "7 held-out"
        reports[f"shift:{label}"] = _run(
            name,
            "shift",
            shifted,
            lam,
            args.seeds,
            5000,
            500,
            out / f"{name}-shift-{label.replace('+', '-').replace(' ', '-')}",
            args,
            describe=shift_plan.describe(),
        )


def _mean(report: dict, policy: str, metric: str = "reward") -> float:
    values = report["curves"][policy][metric]["mean"]
    return sum(values) / len(values)


def _f(value: Any, spec: str = ".2f") -> str:
    return "n/a" if value is None or value != value else format(value, spec)


def _tables(all_reports: dict[str, dict[str, dict]]) -> None:
    print("\n(a) warm start, online vs offline reward (mean over seeds, windows of 500)\n")
    print("| data | seeds | worst window after 500 | worst single-seed window | overall |")
    print("|---|---|---|---|---|")
    for name, reports in all_reports.items():
        if "warm" not in reports:
            continue
        r = reports["warm"]
        s = r["summary"]
        overall = _mean(r, "online") / _mean(r, "offline") - 1
        print(
            f"| {name} | {r['config']['seeds']} | {100 * s['worst_window_after_500']:+.2f}% | "
            f"{100 * s['worst_seed_window_after_500']:+.2f}% | {100 * overall:+.2f}% |"
        )
    print("\n(b) cold start (price prior only): share of the offline router's gain over the")
    print("best single model\n")
    print("| data | seeds | at 2,000 requests | at 5,000 | requests 4,000-5,000 |")
    print("|---|---|---|---|---|")
    for name, reports in all_reports.items():
        if "cold" not in reports:
            continue
        r = reports["cold"]
        at, gain = r["summary"]["gain_recovered_at"], r["summary"]["gain_recovered"]
        print(
            f"| {name} | {r['config']['seeds']} | {_f(at[2000])} | {_f(at[5000])} | "
            f"{_f(sum(gain[-2:]) / 2)} |"
        )
    print("\n(c) shift: warm start from a router trained on other tasks (mean reward)\n")
    print(
        "| data: streamed | best single | shifted offline | in-distribution | online, last "
        "1,000 | shift gap recovered (last 1,000) | share of in-dist. gain over best single |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, reports in all_reports.items():
        for key, r in reports.items():
            if not key.startswith("shift"):
                continue
            on = r["curves"]["online"]["reward"]["mean"]
            rec = r["summary"]["shift_gap_recovered"]
            gain = r["summary"]["gain_recovered"]
            print(
                f"| {name}: {key[6:]} | {_mean(r, 'best-fixed'):.4f} | {_mean(r, 'offline'):.4f}"
                f" | {_mean(r, 'in-distribution'):.4f} | {sum(on[-2:]) / 2:.4f} | "
                f"{_f(sum(rec[-2:]) / 2)} | {_f(sum(gain[-2:]) / 2)} |"
            )
    print("\n(d) budget: expensive task 10% -> 60% over 10,000 requests, windows of 1,000\n")
    print(
        "| data (task) | budget $/1k | fixed lambda: spend range, worst | controller: spend "
        "range, worst after 1st | quality: fixed / hindsight fixed / controller / online+ctrl |"
    )
    print("|---|---|---|---|---|")
    for name, reports in all_reports.items():
        if "budget" not in reports:
            continue
        r = reports["budget"]
        s, b = r["summary"], r["config"]["budget_per_1000"]

        def rng(policy: str, s: dict = s) -> str:
            sp = s[policy]["spend_per_1000"]
            worst = 100 * s[policy]["max_deviation_after_first_window"]
            return f"{min(sp):.3f}-{max(sp):.3f}, {worst:.1f}%"

        q = [
            s[p]["mean_quality"] for p in ("offline", "fixed-hindsight", "budget", "online-budget")
        ]
        print(
            f"| {name} ({r['config']['expensive_task']}) | {b:.3f} | {rng('offline')} | "
            f"{rng('budget')} | {' / '.join(f'{v:.4f}' for v in q)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", default=os.environ.get("ROUTEIQ_DATASETS", "../shared/datasets")
    )
    parser.add_argument("--out", default="results/online")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--quick-seeds", type=int, default=5)
    parser.add_argument("--quality-model", default="ensemble")
    parser.add_argument("--lambda", dest="lam", type=float, default=20.0)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument(
        "--online", default="{}", help='OnlineSettings overrides as JSON: {"adapt_split": true}'
    )
    parser.add_argument("--only", choices=sorted(DATASETS), help="one dataset")
    parser.add_argument("--scenarios", default="warm,cold,shift,budget")
    parser.add_argument("--img", help="copy the warm/cold/shift/budget PNGs here (docs/img)")
    args = parser.parse_args()
    names = [args.only] if args.only else list(DATASETS)
    reports = {name: _dataset(name, args) for name in names}
    _tables(reports)
    if args.img:
        img = Path(args.img)
        img.mkdir(parents=True, exist_ok=True)
        for png in sorted(Path(args.out).glob("*/simulate.png")):
            shutil.copy(png, img / f"simulate-{png.parent.name}.png")


if __name__ == "__main__":
    main()
