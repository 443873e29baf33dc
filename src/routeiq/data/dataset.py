"""The routing dataset: prompts x candidate models, with quality and cost per pair."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class DataError(ValueError):
    """Malformed routing data. The message names the source, line and field where known."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (
                source and f"file {source}",
                line is not None and f"line {line}",
                field and f"field {field!r}",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.source, self.line, self.field = source, line, field


@dataclass(frozen=True)
class RoutingDataset:
    """Prompts x models. ``quality[i, j]`` in [0, 1] and ``cost[i, j]`` in USD per query.

    NaN marks an unobserved pair: logged gateway traffic has one observed model per prompt,
    and a record without feedback yet has no quality at all.
    """

    prompts: list[str]
    models: list[str]
    quality: np.ndarray
    cost: np.ndarray
    ids: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    # Request context per prompt (routeiq.features.context): field -> string or strings.
    contexts: list[dict[str, Any]] = field(default_factory=list)
    # Logged feature vectors instead of text (``log_prompt: features``): one row per prompt,
    # NaN rows where the text is known instead; made by the featurizer with this digest.
    features: np.ndarray | None = None
    featurizer: str | None = None
    tokens: np.ndarray | None = None  # estimated input tokens per feature row (NaN: unknown)

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        if self.features is not None:
            feats = np.asarray(self.features, dtype=np.float32)
            if feats.ndim != 2 or feats.shape[0] != n or not self.featurizer:
                raise DataError(f"features must be ({n}, d) with the featurizer's digest")
            tokens = np.full(n, np.nan) if self.tokens is None else np.asarray(self.tokens, float)
            if tokens.shape != (n,):
                raise DataError(f"tokens has shape {tokens.shape}, expected ({n},)")
            object.__setattr__(self, "features", feats)
            object.__setattr__(self, "tokens", tokens)
        if not self.ids:
            object.__setattr__(self, "ids", [str(i) for i in range(n)])
        for name in ("quality", "cost"):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (n, m):
                raise DataError(f"{name} has shape {arr.shape}, expected ({n}, {m})")
            object.__setattr__(self, name, arr)
        for name in ("ids", "tasks", "splits", "contexts"):
            values = getattr(self, name)
            if values and len(values) != n:
                raise DataError(f"{name} has {len(values)} entries for {n} prompts")
        if len(set(self.models)) != m:
            raise DataError(f"duplicate model names in {self.models}")
        q = self.quality[~np.isnan(self.quality)]
        if q.size and (q.min() < 0 or q.max() > 1):
            raise DataError("quality must lie in [0, 1]")
        c = self.cost[~np.isnan(self.cost)]
        if c.size and c.min() < 0:
            raise DataError("cost must be >= 0")

    def context_rows(self) -> list[dict[str, Any]]:
        """Each prompt's context, with its ``task`` (the task column) as the ``task`` field
        unless the context sets one."""
        n = len(self)
        rows = [dict(c) for c in self.contexts] if self.contexts else [{} for _ in range(n)]
        for row, task in zip(rows, self.tasks or [""] * n, strict=True):
            if task and "task" not in row:
                row["task"] = task
        return rows

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, index: Sequence[int] | np.ndarray) -> RoutingDataset:
        idx = np.asarray(index, dtype=np.int64)
        pick = lambda values: [values[i] for i in idx] if values else []  # noqa: E731
        return RoutingDataset(
            prompts=pick(self.prompts),
            models=list(self.models),
            quality=self.quality[idx],
            cost=self.cost[idx],
            ids=pick(self.ids),
            tasks=pick(self.tasks),
            splits=pick(self.splits),
            contexts=pick(self.contexts),
            features=None if self.features is None else self.features[idx],
            featurizer=self.featurizer,
            tokens=None if self.tokens is None else self.tokens[idx],
        )

    def split(self, name: str) -> RoutingDataset:
        """Rows whose split column equals ``name``."""
        if not self.splits:
            raise DataError("dataset has no split column")
        rows = [i for i, s in enumerate(self.splits) if s == name]
        if not rows:
            raise DataError(f"no rows in split {name!r}; splits are {sorted(set(self.splits))}")
        return self.subset(rows)

    def labelled(self) -> RoutingDataset:
        """Rows with at least one observed quality."""
        return self.subset(np.flatnonzero(~np.isnan(self.quality).all(axis=1)))

    def without_prompts_in(self, other: RoutingDataset) -> RoutingDataset:
        """Drop rows whose prompt text also occurs in ``other`` (train/test leakage)."""
        seen = set(other.prompts)
        return self.subset([i for i, p in enumerate(self.prompts) if p not in seen])

    def deduplicated(self) -> RoutingDataset:
        """Keep the first row of each distinct prompt text."""
        first: dict[str, int] = {}
        for i, p in enumerate(self.prompts):
            first.setdefault(p, i)
        return self.subset(sorted(first.values()))

    def digest(self) -> str:
        """SHA-256 over prompts, models, quality and cost: identifies the training data."""
        h = hashlib.sha256()
        h.update(json.dumps([self.models, self.prompts], ensure_ascii=False).encode())
        h.update(np.ascontiguousarray(self.quality).tobytes())
        h.update(np.ascontiguousarray(self.cost).tobytes())
        return h.hexdigest()

    def with_random_split(self, test_fraction: float = 0.2, seed: int = 0) -> RoutingDataset:
        """A copy whose rows are split train/test at random: by prompt text (a prompt's
        duplicates land on one side), with ``seed``. For data without a split column."""
        if not 0 < test_fraction < 1:
            raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
        texts = sorted(set(self.prompts))
        rng = np.random.default_rng(seed)
        test = set(np.asarray(texts, dtype=object)[rng.random(len(texts)) < test_fraction])
        splits = ["test" if p in test else "train" for p in self.prompts]
        return replace(self, splits=splits)

    def joined(self, test: RoutingDataset) -> RoutingDataset:
        """This dataset as the train split and ``test`` as the test split, in one dataset
        (``test``'s columns reordered to these models; both must have the same models)."""
        if self.features is not None or test.features is not None:
            raise DataError("logged feature vectors cannot be joined with another file")
        if set(test.models) != set(self.models):
            missing = sorted(set(self.models) ^ set(test.models))
            raise DataError(f"train and test data must have the same models; differ in {missing}")
        order = [test.models.index(m) for m in self.models]
        n, k = len(self), len(test)
        return RoutingDataset(
            prompts=self.prompts + test.prompts,
            models=list(self.models),
            quality=np.vstack([self.quality, test.quality[:, order]]),
            cost=np.vstack([self.cost, test.cost[:, order]]),
            ids=self.ids + test.ids,
            tasks=(self.tasks or [""] * n) + (test.tasks or [""] * k)
            if self.tasks or test.tasks
            else [],
            splits=["train"] * n + ["test"] * k,
            contexts=(self.contexts or [{}] * n) + (test.contexts or [{}] * k)
            if self.contexts or test.contexts
            else [],
        )
