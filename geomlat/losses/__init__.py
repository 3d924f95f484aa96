"""Losses built on latent geometry graphs, and the distillation baselines they are compared with.

- Knowledge distillation (LGG paper 4.1): :class:`GKD`, :class:`RKDDistance`, :class:`RKDAngle`,
  :class:`HintonKD`, :class:`FitNet`, :class:`SimilarityPreserving` (combined by the
  :class:`geomlat.objectives.Distiller` objective).
- Label variation as the training objective (4.2): :class:`LabelVariationLoss`.
- Robustness regularizer (4.3): :class:`SmoothnessRegularizer`, :func:`label_variation_power` (fast) and
  :func:`label_variation_power_dense` (dense reference, the authors' approach).

Losses are plug-ins (:mod:`.registry`): :func:`register_loss` (class decorator), :func:`get_loss`,
:func:`build_loss`, the mapping :data:`LOSSES` name -> class, each class saying what its forward takes
(``consumes``). Distillation losses take the teacher first: ``loss(teacher, student, y)`` (torchdistill's
are ``(student, teacher)``). Any loss sees the batch of every rank when wrapped in
:class:`geomlat.distributed.GlobalBatch`.

Every loss returns a scalar tensor; the teacher side of a distillation loss is always detached.
"""
from .distill import GKD, FitNet, HintonKD, RKDAngle, RKDDistance, SimilarityPreserving
from .embedding import LabelVariationLoss
from .registry import LOSSES, build_loss, get_loss, register_loss
from .regularizers import SmoothnessRegularizer, label_variation_power, label_variation_power_dense

__all__ = [
    "FitNet",
    "GKD",
    "HintonKD",
    "LOSSES",
    "LabelVariationLoss",
    "RKDAngle",
    "RKDDistance",
    "SimilarityPreserving",
    "SmoothnessRegularizer",
    "build_loss",
    "get_loss",
    "label_variation_power",
    "label_variation_power_dense",
    "register_loss",
]
