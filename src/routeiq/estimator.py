"""Shared estimator plumbing: parameters from ``__init__``, learned state in ``*_`` attributes.

Learned state is plain numpy arrays and JSON scalars, so every estimator can be written to an
artifact without pickle and rebuilt with :meth:`Estimator.from_state`.
"""

from __future__ import annotations

import inspect
from typing import Any, Self

import numpy as np


class NotFittedError(RuntimeError):
    """Raised when predict/transform is called before fit."""


class Estimator:
    """Base for featurizers and quality models (scikit-learn conventions)."""

    name: str = ""

    def get_params(self) -> dict[str, Any]:
        """The ``__init__`` arguments, as given."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Learned attributes (names ending in ``_``): (JSON scalars/lists, numpy arrays)."""
        scalars: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray):
                arrays[key] = value
            elif isinstance(value, np.generic):
                scalars[key] = value.item()
            else:
                scalars[key] = value
        if not scalars and not arrays:
            raise NotFittedError(f"{type(self).__name__} is not fitted")
        return scalars, arrays

    @classmethod
    def from_state(
        cls, params: dict[str, Any], scalars: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> Self:
        obj = cls(**params)
        for key, value in {**scalars, **arrays}.items():
            if not key.endswith("_"):
                raise ValueError(f"learned attribute {key!r} must end with '_'")
            setattr(obj, key, value)
        obj._after_load()
        return obj

    def _after_load(self) -> None:
        """Hook to rebuild derived caches after :meth:`from_state`."""

    def _check_fitted(self, attr: str) -> None:
        if not hasattr(self, attr):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")
