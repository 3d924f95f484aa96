"""Losses built on latent geometry graphs, and the distillation baselines they are compared with.

- Knowledge distillation (LGG paper 4.1): :class:`GKD`, :class:`RKDDistance`, :class:`RKDAngle`,
  :class:`HintonKD`, :class:`FitNet`, :class:`SimilarityPreserving`, and the :class:`Distiller` objective.
- Label variation as the training objective (4.2): :class:`LabelVariationLoss`.
- Robustness regularizer (4.3): :class:`SmoothnessRegularizer`, :func:`label_variation_power` (fast) and
  :func:`label_variation_power_dense` (dense reference, the authors' approach).

Every loss returns a scalar tensor; the teacher side of a distillation loss is always detached.
"""
from .distill import GKD, Distiller, FitNet, HintonKD, RKDAngle, RKDDistance, SimilarityPreserving
from .embedding import LabelVariationLoss
from .regularizers import SmoothnessRegularizer, label_variation_power, label_variation_power_dense

__all__ = [
    "Distiller",
    "FitNet",
    "GKD",
    "HintonKD",
    "LabelVariationLoss",
    "RKDAngle",
    "RKDDistance",
    "SimilarityPreserving",
    "SmoothnessRegularizer",
    "label_variation_power",
    "label_variation_power_dense",
]
