"""Opening data files with errors reported as DataError."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from routeiq.data.dataset import DataError


def open_text(path: str | Path, newline: str | None = None) -> TextIO:
    """Open ``path`` as UTF-8 text; a missing or unreadable file raises DataError."""
    try:
        return open(path, encoding="utf-8", newline=newline)
    except FileNotFoundError:
        raise DataError("file not found", source=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot open: {exc.strerror or exc}", source=str(path)) from None
