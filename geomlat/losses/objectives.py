"""Compatibility alias: the training objectives live in :mod:`geomlat.objectives` (one place)."""
from ..objectives import BottleneckCrossEntropy, LabelVariationObjective, SmoothnessObjective  # noqa: F401

__all__ = ["LabelVariationObjective", "BottleneckCrossEntropy", "SmoothnessObjective"]
