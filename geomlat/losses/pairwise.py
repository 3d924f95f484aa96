"""Base of the feature distillation losses that compare teacher and student layer pair by layer pair
(GKD, RKD-D, RKD-A, SP, FitNet): the template method of pytorch-metric-learning's losses.

:meth:`PairwiseDistillationLoss.forward` does what they all share: pair up the features
(:meth:`~PairwiseDistillationLoss.check_pairs`), detach the teacher, turn each side into what the loss
compares (:meth:`~PairwiseDistillationLoss.prepare`: by default one (B, d) vector per sample by
:func:`geomlat.graphs.feature_vectors`, the rule of :mod:`geomlat.sequences`, ``attention_mask`` keeping padding
out) and average :meth:`~PairwiseDistillationLoss.pair_loss` over the pairs. A new pairwise loss implements
``pair_loss`` (and ``prepare`` when it compares something other than sample vectors).
"""
from __future__ import annotations

from torch import Tensor, nn

from .._checks import check_choice, full_precision
from ..graphs import feature_vectors
from ..sequences import REDUCTIONS
from ._common import check_pairs

__all__ = ["PairwiseDistillationLoss"]


class PairwiseDistillationLoss(nn.Module):
    """``L = (1 / P) sum_p pair_loss(prepare(t_p, s_p), labels, p)`` over the P (teacher, student) layer pairs.

    Forward: ``teacher_feats``, ``student_feats``: lists (or single tensors) of (B, ...) features, one per
    layer pair (depths and widths free); ``labels`` (B,) or None; keyword ``attention_mask`` (B, T) for
    (B, T, H) token features (Hugging Face's convention, 1 = real token). Returns a scalar. The teacher side
    is always detached.

    Args:
        reduce: token features (B, T, H) -> (B, H) in :meth:`prepare` (:func:`geomlat.sequences.sample_vectors`;
            with ``attention_mask``, the mean of the real tokens by default).

    Class attribute ``geometry_in_float32`` (default True): run the pairs with autocast disabled (the
    products of the geometry in float32 also under ``torch.autocast``; half features are upcast by the
    checks of ``pair_loss``).
    """

    consumes = "features"
    geometry_in_float32 = True

    def __init__(self, reduce: str | None = None):
        super().__init__()
        check_choice(reduce, "reduce", REDUCTIONS)
        self.reduce = reduce

    def check_pairs(self, teacher_feats, student_feats) -> list[tuple[Tensor, Tensor]]:
        """The (teacher, student) feature pairs: the same number of layers, the same batch size in each pair,
        no zero-width features (:func:`geomlat.losses._common.check_pairs`)."""
        return check_pairs(teacher_feats, student_feats)

    def prepare(self, t: Tensor, s: Tensor, attention_mask: Tensor | None, index: int) -> tuple[Tensor, Tensor]:
        """What ``pair_loss`` compares for pair ``index``: by default the (B, d) sample vectors of each side."""
        name = type(self).__name__
        return (feature_vectors(t, attention_mask, self.reduce, f"{name}: teacher features"),
                feature_vectors(s, attention_mask, self.reduce, f"{name}: student features"))

    def pair_loss(self, t: Tensor, s: Tensor, labels: Tensor | None, index: int) -> Tensor:
        """Scalar loss of one prepared pair (``t`` detached)."""
        raise NotImplementedError(f"{type(self).__name__} must implement pair_loss(t, s, labels, index)")

    def _pairs(self, teacher_feats, student_feats, labels: Tensor | None, attention_mask: Tensor | None) -> Tensor:
        pairs = self.check_pairs(teacher_feats, student_feats)
        total = 0.0
        for index, (t, s) in enumerate(pairs):
            t, s = self.prepare(t.detach(), s, attention_mask, index)
            total = total + self.pair_loss(t, s, labels, index)
        return total / len(pairs)

    _pairs_in_float32 = full_precision(_pairs)

    def forward(self, teacher_feats, student_feats, labels: Tensor | None = None, *,
                attention_mask: Tensor | None = None) -> Tensor:
        run = self._pairs_in_float32 if self.geometry_in_float32 else self._pairs
        return run(teacher_feats, student_feats, labels, attention_mask)
