"""A tiny demo router for the offline proxy example, the integration tests and the bench.

Two models and two kinds of prompts, labelled so the right answer is obvious: coding prompts
are solved only by the strong model (``gpt-4o``), chit-chat equally well by both. With the
mock deployments' prices in ``examples/proxy/config.yaml`` and lambda 20, a trained router
sends code to ``gpt-4o`` and chit-chat to ``gpt-4o-mini``. It is a wiring check, not a
benchmark: the labels are synthetic.

    python -m routeiq.integrations.litellm.demo examples/proxy/router
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from routeiq.data.dataset import RoutingDataset

STRONG, CHEAP = "gpt-4o", "gpt-4o-mini"

CODE_PROMPTS = (
    "Write a Python function that {task}.",
    "Fix the bug in this JavaScript code that {task}: `for (let i = 0; i <= n; i++) {{ }}`",
    "Implement in Rust a function that {task}, with unit tests.",
    "Refactor this SQL query so that it {task}: SELECT * FROM orders JOIN users ON id;",
    "Explain the time complexity of an algorithm that {task} and write it in C++.",
    "Write a bash script that {task} and handles errors with set -euo pipefail.",
)
CODE_TASKS = (
    "parses a CSV file and sums a column",
    "reverses a linked list in place",
    "finds the longest palindromic substring",
    "merges overlapping intervals",
    "computes a topological sort of a graph",
    "implements an LRU cache",
    "validates a binary search tree",
    "serializes a tree to JSON",
    "deduplicates records by key",
    "retries an HTTP request with exponential backoff",
)
CHAT_PROMPTS = (
    "Hi! How are you doing {when}?",
    "What's your favourite {thing}? Mine is probably pizza.",
    "Tell me something nice about {thing}, I had a long day {when}.",
    "Good morning! Any plans for {when}?",
    "Thanks so much for the chat {when}, it really cheered me up!",
    "Do you like {thing}? I was just thinking about it {when}.",
)
CHAT_THINGS = (
    "movie",
    "season",
    "colour",
    "holiday",
    "song",
    "book",
    "dog breed",
    "food",
    "city",
    "board game",
)
CHAT_WHENS = ("today", "this weekend", "tonight", "this morning", "lately", "this week")


def demo_prompts(seed: int = 0) -> tuple[list[str], list[str]]:
    """(prompts, kinds): every code template x task and chat template x thing x when."""
    prompts, kinds = [], []
    for template in CODE_PROMPTS:
        for task in CODE_TASKS:
            prompts.append(template.format(task=task))
            kinds.append("code")
    for template in CHAT_PROMPTS:
        for thing in CHAT_THINGS:
            for when in CHAT_WHENS[:2]:
                prompts.append(template.format(thing=thing, when=when))
                kinds.append("chat")
    order = np.random.default_rng(seed).permutation(len(prompts))
    return [prompts[i] for i in order], [kinds[i] for i in order]


def demo_dataset(seed: int = 0) -> RoutingDataset:
    """Code: strong 1.0, cheap 0.0; chat: both 1.0 (5% of labels flipped, for realism)."""
    prompts, kinds = demo_prompts(seed)
    rng = np.random.default_rng(seed)
    quality = np.array([[1.0, 0.0] if k == "code" else [1.0, 1.0] for k in kinds])
    flip = rng.random(quality.shape) < 0.05
    quality = np.where(flip, 1.0 - quality, quality)
    tokens = np.array([len(p) / 4 + 256 for p in prompts])
    cost = np.stack([tokens * 1e-5, tokens * 2e-7], axis=1)
    return RoutingDataset(
        prompts=prompts, models=[STRONG, CHEAP], quality=quality, cost=cost, tasks=kinds
    )


def build_demo_router(path: str | Path, lam: float = 20.0, seed: int = 0) -> str:
    """Train the demo router (lexical features + logistic quality) and save it; returns digest."""
    from routeiq.features.lexical import LexicalFeaturizer
    from routeiq.quality.linear import LogisticQuality
    from routeiq.router import LearnedRouter

    router = LearnedRouter(
        LexicalFeaturizer(n_components=32, min_df=1),
        LogisticQuality(C=1.0),
        lam=lam,
        cv_folds=3,
        random_state=seed,
    )
    router.fit(demo_dataset(seed))
    return router.save(path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m routeiq.integrations.litellm.demo OUTPUT_DIR", file=sys.stderr)
        raise SystemExit(2)
    print(build_demo_router(sys.argv[1]))
