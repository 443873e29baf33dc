"""Third-party quality models and featurizers, registered through Python entry points.

A distribution registers a class under a name in its ``pyproject.toml``::

    [project.entry-points."routeiq.quality_models"]
    centroid = "routeiq_example_ext:CentroidQuality"

    [project.entry-points."routeiq.featurizers"]
    charhash = "routeiq_example_ext:CharHashFeaturizer"

and ``make_quality_model("centroid")`` / ``routeiq train --router centroid`` use it like a
built-in. Entry points are read at lookup (nothing is registered at import). Built-ins win:
an entry point cannot shadow a built-in name (it is ignored with a warning). An artifact
records the providing distribution and version of every non-built-in part
(``provider: {distribution, version}``); :meth:`Registry.check_provider` refuses to load it
when that distribution is missing or has another major version.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points
from importlib.metadata import version as dist_version
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from routeiq.artifacts import ArtifactError
from routeiq.estimator import Estimator

QUALITY_MODEL_GROUP = "routeiq.quality_models"
FEATURIZER_GROUP = "routeiq.featurizers"

T = TypeVar("T", bound=Estimator)


class ExtensionError(ValueError):
    """An entry point that cannot be used: it fails to import, or is not the right class."""


class ShadowedExtensionWarning(UserWarning):
    """An entry point registered under a built-in name; the built-in is used."""


@dataclass(frozen=True)
class Provider:
    """The distribution that provides an extension: ``Provider("routeiq-example-ext", "0.1.0")``."""

    distribution: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"distribution": self.distribution, "version": self.version}

    @classmethod
    def from_dict(cls, data: Any, *, where: str) -> Provider:
        if (
            not isinstance(data, Mapping)
            or not isinstance(data.get("distribution"), str)
            or not isinstance(data.get("version"), str)
        ):
            raise ArtifactError(
                f"{where}: provider must be {{distribution, version}}, got {data!r}"
            )
        return cls(data["distribution"], data["version"])

    def requirement(self) -> str:
        """A pip requirement for a compatible version (same major)."""
        major = _major(self.version)
        upper = f",<{major + 1}" if major is not None else ""
        return f"{self.distribution}>={self.version}{upper}"


def _major(version: str) -> int | None:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


class Registry(Generic[T]):
    """Built-in classes by name plus the entry points of one group, merged at lookup.

    ``Registry("quality model", QUALITY_MODEL_GROUP, QualityModel, {"knn": KNNQuality})``.
    Holds no mutable state: every lookup reads the installed entry points afresh (a few ms;
    lookups happen when training or loading an artifact, never per request).
    """

    def __init__(
        self, kind: str, group: str, base: type[T], builtins: Mapping[str, type[T]]
    ) -> None:
        self.kind = kind
        self.group = group
        self.base = base
        self.builtins: Mapping[str, type[T]] = MappingProxyType(dict(builtins))

    def _entry_points(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            if ep.name in self.builtins:
                warnings.warn(
                    f"{self.kind} entry point {ep.name!r} ({ep.value}) from "
                    f"{_dist_name(ep)!r} is ignored: {ep.name!r} is a built-in {self.kind}",
                    ShadowedExtensionWarning,
                    stacklevel=3,
                )
                continue
            found.setdefault(ep.name, ep)
        return found

    def extension_names(self) -> list[str]:
        """Names registered through entry points (not loaded), built-in names excluded."""
        return sorted(self._entry_points())

    def names(self) -> list[str]:
        """Built-in names first (registry order), then extension names."""
        return [*self.builtins, *self.extension_names()]

    def mapping(self) -> Mapping[str, type[T]]:
        """Every class by name, built-ins and loaded extensions (read-only)."""
        merged: dict[str, type[T]] = dict(self.builtins)
        for name, ep in self._entry_points().items():
            merged[name] = self._load(ep)
        return MappingProxyType(merged)

    def get(self, name: str) -> type[T]:
        """The class registered under ``name``; ``ValueError`` listing the known names."""
        if isinstance(name, str) and name in self.builtins:
            return self.builtins[name]
        ep = self._entry_points().get(name) if isinstance(name, str) else None
        if ep is None:
            known = ", ".join(self.names())
            raise ValueError(f"unknown {self.kind} {name!r}; known: {known}") from None
        return self._load(ep)

    def provider(self, name: str) -> Provider | None:
        """The distribution providing ``name``; None for a built-in."""
        if name in self.builtins:
            return None
        ep = self._entry_points().get(name)
        if ep is None:
            raise ValueError(f"unknown {self.kind} {name!r}")
        dist = ep.dist
        if dist is None:  # an entry point without a distribution (not seen in practice)
            raise ExtensionError(f"{self.kind} {name!r}: entry point has no distribution")
        return Provider(dist.metadata["Name"], dist.version)

    def check_provider(self, name: str, recorded: Any, *, where: str) -> None:
        """Refuse a saved ``name`` whose recorded provider is missing or incompatible."""
        if recorded is None:
            return
        want = Provider.from_dict(recorded, where=where)
        label = f"{self.kind} {name!r} is provided by package {want.distribution!r} {want.version}"
        hint = f"pip install '{want.requirement()}'"
        try:
            installed = dist_version(want.distribution)
        except PackageNotFoundError:
            raise ArtifactError(f"{where}: {label}, which is not installed; {hint}") from None
        if _major(installed) != _major(want.version):
            raise ArtifactError(
                f"{where}: {label}, but version {installed} is installed (another major "
                f"version; its saved state may not load); {hint}, or retrain the router"
            )
        ep = self._entry_points().get(name)
        if ep is None or _norm(_dist_name(ep)) != _norm(want.distribution):
            got = "nothing" if ep is None else f"package {_dist_name(ep)!r}"
            raise ArtifactError(
                f"{where}: {label}, but {got} provides it in this environment "
                f"(entry point group {self.group!r}); {hint}"
            )

    def _load(self, ep: EntryPoint) -> type[T]:
        where = f"{self.kind} {ep.name!r} ({ep.value} from {_dist_name(ep)!r})"
        try:
            cls = ep.load()
        except Exception as exc:  # an extension's import error must not look like ours
            raise ExtensionError(f"{where} failed to import: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ExtensionError(f"{where} is not a {self.base.__name__} subclass")
        if cls.name != ep.name:
            # The artifact records cls.name; loading looks it up by that name again.
            raise ExtensionError(
                f"{where}: its class attribute `name` is {cls.name!r}, not {ep.name!r}"
            )
        return cls


def _dist_name(ep: EntryPoint) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "?"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


__all__ = [
    "FEATURIZER_GROUP",
    "QUALITY_MODEL_GROUP",
    "ExtensionError",
    "Provider",
    "Registry",
    "ShadowedExtensionWarning",
]
