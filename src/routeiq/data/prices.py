"""Model prices (USD per token) and the token-count approximation used to estimate query cost."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeGuard

from routeiq.data.dataset import DataError

Price = tuple[float, float]  # (input USD per token, output USD per token)


def estimate_tokens(text: str) -> int:
    """Approximate token count: ``ceil(len(text) / 4)``, at least 1.

    Four characters per token is the usual rule of thumb for English with BPE tokenizers; it
    is cheap, deterministic and needs no tokenizer download. Costs built on it are estimates.
    """
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True)
class PriceTable:
    """Read-only map ``model -> (input USD/token, output USD/token)``.

    With ``litellm_fallback=True``, :meth:`lookup` asks litellm's bundled price map for models
    not in the table.
    """

    prices: Mapping[str, Price] = field(default_factory=dict)
    litellm_fallback: bool = False

    def __post_init__(self) -> None:
        clean: dict[str, Price] = {}
        for model, (inp, out) in self.prices.items():
            if not (_nonneg(inp) and _nonneg(out)):
                raise DataError(f"price must be a number >= 0, got {(inp, out)}", field=model)
            clean[model] = (float(inp), float(out))
        object.__setattr__(self, "prices", MappingProxyType(clean))

    @classmethod
    def from_llmrouter_json(cls, path: str | Path, *, litellm_fallback: bool = False) -> PriceTable:
        """Read LLMRouter's ``llm_candidates.json`` (``input_price``, ``output_price`` per 1M)."""
        source = str(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError("file not found", source=source) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", source=source, line=exc.lineno) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read: {exc}", source=source) from None
        if not isinstance(data, dict):
            raise DataError("expected an object mapping model names to prices", source=source)
        prices: dict[str, Price] = {}
        for model, entry in data.items():
            pair = []
            for key in ("input_price", "output_price"):
                value = entry.get(key) if isinstance(entry, dict) else None
                if not _nonneg(value):
                    raise DataError(
                        f"expected a number >= 0 (USD per million tokens), got {value!r}",
                        source=source,
                        field=f"{model}.{key}",
                    )
                pair.append(float(value) / 1e6)
            prices[model] = (pair[0], pair[1])
        return cls(prices, litellm_fallback)

    def __contains__(self, model: object) -> bool:
        return model in self.prices

    def lookup(self, model: str) -> Price | None:
        """Per-token prices of ``model``, or None if unknown."""
        price = self.prices.get(model)
        if price is None and self.litellm_fallback:
            price = litellm_price(model)
        return price

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD for one call with the given token counts, or None if the price is unknown."""
        price = self.lookup(model)
        if price is None:
            return None
        return input_tokens * price[0] + output_tokens * price[1]


def price_fields(source: Mapping[str, Any] | None) -> Price | None:
    """``(input_cost_per_token, output_cost_per_token)`` of a mapping (LiteLLM's field names),
    or None unless both are numbers >= 0."""
    if not source:
        return None
    inp, out = source.get("input_cost_per_token"), source.get("output_cost_per_token")
    if _nonneg(inp) and _nonneg(out):
        return float(inp), float(out)
    return None


def litellm_cost_entry(model: str, field: str = "input_cost_per_token") -> dict[str, Any] | None:
    """``model``'s entry in litellm's bundled cost map that has ``field``, or None (unknown
    model, no such field, or no litellm).

    Tries ``model`` as given, then without its provider prefixes (``openai/gpt-4o`` ->
    ``gpt-4o``). litellm is imported lazily: it is optional and takes seconds to import.
    Before the first import, ``LITELLM_LOCAL_MODEL_COST_MAP`` is set so litellm reads the
    price map it ships instead of fetching one; once imported that setting is moot.
    """
    if "litellm" not in sys.modules:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        return None
    parts = model.split("/")
    for k in range(len(parts)):
        entry = litellm.model_cost.get("/".join(parts[k:]))
        if isinstance(entry, dict) and entry.get(field) is not None:
            return entry
    return None


def litellm_price(model: str) -> Price | None:
    """Per-token prices from litellm's bundled cost map (:func:`litellm_cost_entry`), or None."""
    return price_fields(litellm_cost_entry(model))


def estimate_request_tokens(messages: Any = None, input: Any = None) -> int:
    """Estimated input tokens of a whole request: every message's text (not only the last),
    or a text ``input``; at least 1."""
    texts: list[str] = []
    if messages:
        for msg in messages:
            content = msg.get("content") if isinstance(msg, Mapping) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(
                    part["text"]
                    for part in content
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str)
                )
    elif isinstance(input, str):
        texts.append(input)
    elif isinstance(input, list):
        texts.extend(x for x in input if isinstance(x, str))
    return max(1, sum(estimate_tokens(t) for t in texts)) if texts else 1


def _nonneg(value: object) -> TypeGuard[float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
