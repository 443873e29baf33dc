"""Input checks shared by the featurizers."""

from __future__ import annotations

from collections.abc import Sequence


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list; a bare ``str`` (a classic silent bug) or non-str items raise."""
    if isinstance(texts, str):
        raise TypeError("expected a sequence of texts, got a single str")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"expected str items, got {type(t).__name__}")
    return out
