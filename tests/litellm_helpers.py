"""Shared helpers for the LiteLLM tests: mock deployments, the demo model list, requests.

Imported as ``from litellm_helpers import ...`` (pytest puts tests/ on sys.path). Needs no
LiteLLM itself; the importing test modules skip when LiteLLM is missing.
"""

from __future__ import annotations

from typing import Any

from routeiq.integrations.litellm.demo import CHEAP, STRONG

CODE = "Write a Python function that computes the median of a list, with tests."
CHAT = "Hi there! How are you doing this weekend? Any fun plans?"

# Per-token prices: gpt-4o ~ $0.0026 per demo request, gpt-4o-mini ~ $0.00003.
STRONG_PRICE = {"input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5}
CHEAP_PRICE = {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}


def deployment(group: str, ident: str, model: str, price: dict, reply: Any = "ok") -> dict:
    """One mock OpenAI deployment: ``reply`` is the mock response (an exception raises)."""
    return {
        "model_name": group,
        "litellm_params": {
            "model": f"openai/{model}",
            "api_key": "fake",
            "mock_response": reply,
            **price,
        },
        "model_info": {"id": ident},
    }


def embedding_deployment(group: str, ident: str) -> dict:
    """A mock embeddings deployment (a group RouteIQ's router has no model for)."""
    return {
        "model_name": group,
        "litellm_params": {
            "model": "openai/text-embedding-3-small",
            "api_key": "fake",
            "mock_response": [0.1, 0.2, 0.3],
        },
        "model_info": {"id": ident},
    }


def model_list() -> list[dict]:
    """Groups "chat" (strong, cheap), "broken" (always fails) and "backup" (strong, cheap)."""
    return [
        deployment("chat", "strong", STRONG, STRONG_PRICE, "strong says hi"),
        deployment("chat", "cheap", CHEAP, CHEAP_PRICE, "cheap says hi"),
        deployment("broken", "broken-1", STRONG, STRONG_PRICE, Exception("provider down")),
        deployment("backup", "backup-strong", STRONG, STRONG_PRICE),
        deployment("backup", "backup-cheap", CHEAP, CHEAP_PRICE),
    ]


async def ask(router: Any, text: str, model: str = "chat", **kwargs: Any) -> Any:
    return await router.acompletion(
        model=model, messages=[{"role": "user", "content": text}], **kwargs
    )


def served(response: Any) -> str:
    return response._hidden_params["model_id"]
