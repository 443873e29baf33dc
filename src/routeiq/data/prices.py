"""Model prices (USD per token) and the token-count approximation used to estimate query cost."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeGuard

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


def litellm_price(model: str) -> Price | None:
    """Per-token prices from litellm's bundled cost map, or None (unknown model or no litellm).

    Tries ``model`` as given, then without its provider prefixes (``openai/gpt-4o`` ->
    ``gpt-4o``). litellm is imported lazily: it is optional and takes seconds to import.
    """
    # Use the price map shipped with litellm; never fetch one over the network.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        return None
    parts = model.split("/")
    for k in range(len(parts)):
        entry = litellm.model_cost.get("/".join(parts[k:]))
        if isinstance(entry, dict):
            inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
            if _nonneg(inp) and _nonneg(out):
                return float(inp), float(out)
    return None


def _nonneg(value: object) -> TypeGuard[float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
