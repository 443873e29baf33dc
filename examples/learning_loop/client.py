"""Send requests through the learning-loop proxy and rate each answer.

    python examples/learning_loop/client.py http://127.0.0.1:4000 "$LITELLM_MASTER_KEY"

Each chat response names its decision in ``x-routeiq-decision-id``; the client rates it at
``POST /routeiq/feedback`` with the same key (a score in [0, 1], or "up"/"down"). Here the
rating is a stand-in for a real judgement: coding answers from the small model are rated
down, everything else up.
"""

from __future__ import annotations

import sys

import httpx

PROMPTS = [
    "Write a Python function that merges two sorted lists.",
    "Hi! Any plans for the weekend?",
    "Implement binary search in Rust, with tests.",
    "What's a good name for a cat?",
]


def main(base: str, key: str, rounds: int = 25) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        for i in range(rounds * len(PROMPTS)):
            prompt = PROMPTS[i % len(PROMPTS)]
            body = {
                "model": "chat",
                "user": f"user-{i % 10}",  # the experiment's unit
                "messages": [{"role": "user", "content": prompt}],
            }
            response = client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            decision = response.headers["x-routeiq-decision-id"]
            model = response.headers.get("x-routeiq-model", "")
            coding = "function" in prompt or "Implement" in prompt
            score = "down" if coding and model.endswith("mini") else "up"
            rated = client.post("/routeiq/feedback", json={"decision_id": decision, "score": score})
            print(
                f"{model:12s} {response.headers.get('x-routeiq-variant', '-'):16s} "
                f"{score:4s} -> {rated.status_code}"
            )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
