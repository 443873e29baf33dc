"""Example RouteIQ extension: ``CentroidQuality`` and ``CharHashFeaturizer``."""

from routeiq_example_ext.centroid import CentroidQuality
from routeiq_example_ext.charhash import CharHashFeaturizer

__all__ = ["CentroidQuality", "CharHashFeaturizer"]
