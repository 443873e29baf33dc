"""Verified, pickle-free router artifacts (JSON metadata + npz arrays + SHA-256 manifest)."""

from routeiq.artifacts.read import artifact_digest, read_artifact
from routeiq.artifacts.store import FORMAT, FORMAT_VERSION, Artifact, ArtifactError, write_artifact

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Artifact",
    "ArtifactError",
    "artifact_digest",
    "read_artifact",
    "write_artifact",
]
