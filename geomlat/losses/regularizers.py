"""Robustness regularizer: smooth evolution of label variation across layers (LGG paper Section 4.3).

Lassance, Gripon & Ortega, "Laplacian networks: bounding indicator function smoothness for neural
networks robustness" (APSIPA Trans. 2021). With ``sigma_l = tr(V^T L_l^m V)`` the label variation of
layer l's cosine LGG (``L = D - A`` combinatorial, V the one-hot labels),

    ``L_reg = gamma^m * sum_{l=1}^{L-1} |sigma_{l+1} - sigma_l| / (L - 1)``.

Fast path for full graphs (``k=None``): with X the unit-norm rows (zero rows stay zero), the cosine
adjacency without self-loops acts as ``A M = X (X^T M) - s * M``, ``s_i = |x_i|^2`` in {0, 1}; degrees are
``A 1``; ``L M = deg * M - A M``. Then ``tr(V^T L^m V) = <L^a V, L^b V>`` with a = m // 2, b = m - a, in
O(m B d C): the B x B matrix is never formed (the authors' code builds it and multiplies B x B matrices).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graphs import feature_vectors, latent_adjacency
from ..kernels import norms_out_of_range, row_scales
from ..sequences import REDUCTIONS
from .._checks import check_choice, check_features, check_features_min, check_k, check_labels, full_precision, value_check
from ._common import as_feature_list
from .registry import register_loss
from .._params import check_int


def _one_hot(y: Tensor, b: int, like: Tensor, num_classes: int | None = None) -> Tensor:
    """(B, C) one-hot labels; ``num_classes=None`` reads ``y.max()`` on the host (C = max + 1)."""
    y = check_labels(y, b, "y").to(like.device)
    if num_classes is not None:
        # a label >= num_classes would make one_hot fail on the device: a (deferrable) named check instead
        value_check(y.max() < num_classes, f"y holds a label >= num_classes = {num_classes}")
        # scatter, not F.one_hot, which reads the labels' range on the host to validate them
        onehot = torch.zeros(y.shape[0], num_classes, dtype=like.dtype, device=like.device)
        return onehot.scatter_(1, y.clamp(0, num_classes - 1)[:, None], 1.0)
    return F.one_hot(y).to(like.dtype)


def _check_power(m: int) -> None:
    check_int(m, "power m", low=1)


def _check_cosine(flat: Tensor, lo: float | None = None) -> None:
    """Reject negative features; ``lo`` (the minimum, if already known) saves a pass over them."""
    value_check(~(flat < 0).any() if lo is None else lo >= 0,  # deferred inside deferred_value_checks
                "the smoothness regularizer uses cosine LGGs, which need non-negative features (capture "
                "post-ReLU outputs); got negative entries")


def _normalizer(total: Tensor, m: int) -> Tensor:
    """Divide by ``total^m`` (total edge weight), 0 / 0 -> 0 for a graph without weight."""
    safe = torch.where(total != 0, total, torch.ones_like(total))
    return torch.where(total != 0, safe**m, torch.ones_like(total))


#: Splits of the feature axis that turn the skinny CPU product of :func:`mt_x` into a batched product.
_SPLITS = 16


def mt_x(m: Tensor, x: Tensor) -> Tensor:
    """``m^T x`` (C, d) for m (B, C), x (B, d), C small.

    MKL runs this (C, B) x (B, d) shape several times below memory speed on CPU; as a batch of
    :data:`_SPLITS` products over slices of the feature axis it runs 2-3x faster (same sums). GPUs, or a
    feature size that does not split, take the plain product.
    """
    b, d = x.shape
    if x.device.type != "cpu" or d % _SPLITS or d < 256 * _SPLITS:
        return m.T @ x
    c = m.shape[1]
    out = torch.bmm(m.T.unsqueeze(0).expand(_SPLITS, c, b), x.view(b, _SPLITS, d // _SPLITS).transpose(0, 1))
    return out.transpose(0, 1).reshape(c, d)  # (splits, C, d / splits) -> (C, d)


class _CosineAdjacencyTimes(torch.autograd.Function):
    """``A M`` (B, C) for the full cosine adjacency A of x (B, d) without self-loops, and M (B, C).

    With ``r_i = 1 / |x_i|`` (0 for a zero row, whose gradient is then 0, as in
    :func:`geomlat.kernels.cosine_gram`) and ``s_i = (|x_i| r_i)^2`` (1, or 0 for a zero row),
    ``A M = r * (X P^T) - s * M`` where ``P = (r * M)^T X`` (C, d): the (B, B) matrix is never formed and X
    is read three times (norms, P, X P^T). Backward, with G = dOut, N = r * M, H = X P^T:
    ``dP = (r * G)^T X``, ``dN = X dP^T``, ``dr = rowsum(G * H + dN * M)`` and
    ``dX = [r * G, N] [P; dP] - r^3 dr * X`` (the last term from ``r = 1 / |x|``; s is locally constant),
    ``dM = r * dN - s * G``: X read twice more and dX written once.

    A depends only on the directions of the rows: when a squared norm overflows or underflows, the rows
    are first divided by their power-of-2 :func:`geomlat.kernels.row_scales` (exact) and dX by the same.
    """

    @staticmethod
    def forward(ctx, x: Tensor, m: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        ctx.scales = None
        if norms_out_of_range(norm[:, 0] ** 2, x, per_row=True):
            ctx.scales = row_scales(x)
            x = x / ctx.scales
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        # 1 / |x_i|, 0 for a zero row (no 1 / eps: a zero row's gradient would be ~1e12, inf in float16)
        nonzero = norm > 0
        inv = torch.where(nonzero, 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(norm))
        self_sim = (norm * inv) ** 2
        n = inv * m
        p = mt_x(n, x)
        h = x @ p.T  # (B, C)
        ctx.save_for_backward(x, m, inv, self_sim, nonzero, p, h)
        return inv * h - self_sim * m

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, m, inv, self_sim, above_eps, p, h = ctx.saved_tensors
        rg, n = inv * grad, inv * m
        dp = mt_x(rg, x)
        dn = x @ dp.T
        dx = dm = None
        if ctx.needs_input_grad[0]:
            dr = (grad * h + dn * m).sum(dim=1, keepdim=True)
            dx = torch.cat([rg, n], dim=1) @ torch.cat([p, dp], dim=0)
            dx.addcmul_(x, -(inv**3) * dr * above_eps)
            if ctx.scales is not None:  # x was divided by its row scales
                dx = dx / ctx.scales
        if ctx.needs_input_grad[1]:
            dm = inv * dn - self_sim * grad
        return dx, dm


@full_precision
def label_variation_power(
    x: Tensor, y: Tensor, m: int = 2, k: int | None = None, normalized: bool = False, k_counts_self: bool = False,
    *, attention_mask: Tensor | None = None, reduce: str | None = None,
) -> Tensor:
    """``tr(V^T L^m V)`` of the cosine LGG of ``x`` without a B x B matrix when ``k=None``.

    Args:
        x: (B, ...) non-negative features (flattened to (B, d)); zero rows are isolated vertices. (B, T, H)
            token features with ``attention_mask`` (B, T) (1 = real token) and ``reduce`` become (B, H) by
            :func:`geomlat.sequences.sample_vectors` (padding never enters the graph).
        y: (B,) integer labels.
        m: power of the combinatorial Laplacian.
        k: ``None`` for the full graph (fast O(m B d C) path); an int uses the dense k-NN LGG.
        normalized: divide by ``W^m``, W = total edge weight ``sum_{i != j} A_ij``; for m = 1 this is the
            normalized label variation of Appendix C (in [0, 1]); for any m it makes sigma invariant to a
            rescaling of A.
        k_counts_self: the convention of ``k``. ``False`` (geomlat's default): each vertex keeps its ``k``
            most similar *other* vertices (``1 <= k < B``). ``True`` (the authors' laplacian_networks
            ``gsp``): each row is sorted with its self-similarity 1 included, so ``k`` counts the vertex
            itself and keeps ``k - 1`` others (``2 <= k <= B``; ``k = B`` is the full graph); the same
            graph as geomlat's ``k - 1``.

    Returns:
        scalar tensor, differentiable w.r.t. ``x``.
    """
    _check_power(m)
    others = _other_neighbors(k, k_counts_self)
    flat = _check_layer(feature_vectors(x, attention_mask, reduce, "label_variation_power: x"), k, k_counts_self)
    return _label_variation_power(flat, _one_hot(y, flat.shape[0], flat), m, others, normalized)


def _other_neighbors(k: int | None, k_counts_self: bool) -> int | None:
    """geomlat's ``k`` (other vertices per row) for a ``k`` given in either convention (see ``k_counts_self``)."""
    if k is None or not k_counts_self:
        return k
    check_k(k, k + 1)  # an int >= 1
    if k < 2:
        raise ValueError(
            f"k={k} with k_counts_self=True counts the vertex itself, so it keeps no other vertex: k must be >= 2"
        )
    return k - 1


def _check_neighbors(k: int | None, k_counts_self: bool, b: int) -> None:
    """``k`` in its convention against the batch size ``b``."""
    if k_counts_self and k is not None and k > b:
        raise ValueError(f"k={k} with k_counts_self=True (the vertex itself included) must be at most the batch size {b}")
    check_k(_other_neighbors(k, k_counts_self), b)


def _check_layer(x: Tensor, k: int | None, k_counts_self: bool = False) -> Tensor:
    """(B, d) features after the checks of a cosine LGG (one reading pass for NaN/Inf and the sign)."""
    flat, lo = check_features_min(x)
    _check_cosine(flat, lo)
    _check_neighbors(k, k_counts_self, flat.shape[0])
    return flat


def _label_variation_power(flat: Tensor, v: Tensor, m: int, k: int | None, normalized: bool) -> Tensor:
    """:func:`label_variation_power` of checked (B, d) features and the (B, C) one-hot labels ``v``."""
    first = None  # A [1, V] when computed together with the degrees
    if k is None:
        def adj_times(mat: Tensor) -> Tensor:
            return _CosineAdjacencyTimes.apply(flat, mat)

        # the rows of V are one-hot, so V 1 = 1 and the degrees A 1 = (A V) 1 come with A V for free
        first = adj_times(v)
        deg = first.sum(dim=1, keepdim=True)
    else:
        adj = latent_adjacency(flat, k=k, kernel="cosine")[0]

        def adj_times(mat: Tensor) -> Tensor:
            return adj @ mat

        deg = adj.sum(dim=1, keepdim=True)

    def lap_times(mat: Tensor) -> Tensor:
        return deg * mat - adj_times(mat)

    left = v
    for i in range(m // 2):
        left = deg * v - first if (i == 0 and first is not None) else lap_times(left)
    right = left
    for _ in range(m - m // 2 - m // 2):  # one more application when m is odd
        right = deg * v - first if (m == 1 and first is not None) else lap_times(right)
    sigma = (left * right).sum()
    if normalized:
        sigma = sigma / _normalizer(deg.sum(), m)
    return sigma


@full_precision
def label_variation_power_dense(
    x: Tensor, y: Tensor, m: int = 2, k: int | None = None, normalized: bool = False, k_counts_self: bool = False,
    *, attention_mask: Tensor | None = None, reduce: str | None = None,
) -> Tensor:
    """Reference (the authors' approach): dense cosine LGG, dense ``L = D - A``, ``matrix_power(L, m)``.

    Same arguments and value as :func:`label_variation_power`, at O(B^2 d + m B^3) cost and O(B^2) memory.
    """
    _check_power(m)
    others = _other_neighbors(k, k_counts_self)
    flat = check_features(feature_vectors(x, attention_mask, reduce, "label_variation_power_dense: x"))
    _check_cosine(flat)
    _check_neighbors(k, k_counts_self, flat.shape[0])
    adj = latent_adjacency(flat, k=others, kernel="cosine")[0]
    lap = torch.diag(adj.sum(dim=1)) - adj
    v = _one_hot(y, flat.shape[0], flat)
    sigma = torch.trace(v.T @ torch.linalg.matrix_power(lap, m) @ v)
    if normalized:
        sigma = sigma / _normalizer(adj.sum(), m)
    return sigma


@register_loss("smoothness")
class SmoothnessRegularizer(nn.Module):
    """Label-variation smoothness regularizer (Lassance, Gripon & Ortega, "Laplacian networks", 2021).

    ``gamma^m * sum_l |sigma_{l+1} - sigma_l| / (L - 1)`` over consecutive captured layers, sigma_l the
    label variation ``tr(V^T L^m V)`` of layer l's cosine LGG. Authors' setting: every ReLU output of a
    PreActResNet18, full graphs, m = 2, gamma = 0.01 (weight gamma^m = 1e-4 already included here).

    Args:
        power: m, the power of the Laplacian.
        gamma: the weight is ``gamma ** power``.
        k: ``None`` (full graph, fast path without any B x B matrix) or a k-NN graph (dense path).
        k_counts_self: ``False`` (default): ``k`` other vertices per row. ``True``: the authors' convention
            (laplacian_networks ``gsp`` sorts each row with the self-similarity included), ``k`` counts
            the vertex itself, i.e. geomlat's ``k - 1`` (see :func:`label_variation_power`).
        normalized: normalize each sigma by the total edge weight to the power m (see
            :func:`label_variation_power`).
        num_classes: the number of classes C, when known: the one-hot labels then need no host read of
            ``y.max()`` (a synchronization per step on a GPU); ``None`` reads it. Values do not depend on it.
        reduce: token features (B, T, H) -> (B, H) (:func:`geomlat.sequences.sample_vectors`; with the
            keyword ``attention_mask`` of forward, the mean of the real tokens by default).

    Forward (``consumes = "layers"``): ``features`` list of L >= 2 non-negative (B, ...) tensors
    (consecutive layers, any widths), ``y`` (B,) labels -> scalar. Under torch.distributed,
    :class:`geomlat.distributed.GlobalBatch` gives the graphs of the whole batch.
    """

    consumes = "layers"

    def __init__(
        self,
        power: int = 2,
        gamma: float = 0.01,
        k: int | None = None,
        normalized: bool = False,
        k_counts_self: bool = False,
        num_classes: int | None = None,
        reduce: str | None = None,
    ):
        super().__init__()
        _check_power(power)
        check_choice(reduce, "reduce", REDUCTIONS)
        self.reduce = reduce
        check_int(num_classes, "num_classes", low=1, none_ok=True)
        self.num_classes = num_classes
        if not isinstance(k_counts_self, bool):
            raise TypeError(f"k_counts_self must be a bool, got {type(k_counts_self).__name__}")
        if k is not None:
            check_k(k, k + 1)
        self._others = _other_neighbors(k, k_counts_self)
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.power, self.gamma, self.k, self.normalized = power, float(gamma), k, bool(normalized)
        self.k_counts_self = k_counts_self

    @full_precision  # float32 geometry also under autocast (half features are upcast by the checks)
    def variations(self, features: Sequence[Tensor], y: Tensor, num_classes: int | None = None, *,
                   attention_mask: Tensor | None = None) -> Tensor:
        """(L,) label variation of each layer (``num_classes``: overrides the constructor's for this call;
        ``attention_mask`` (B, T): the padding of (B, T, H) token features, see ``reduce``)."""
        num_classes = self.num_classes if num_classes is None else num_classes
        feats = as_feature_list(features, "features")
        sigmas, v = [], None
        for i, f in enumerate(feats):
            f = feature_vectors(f, attention_mask, self.reduce, f"SmoothnessRegularizer: features[{i}]")
            flat = _check_layer(f, self.k, self.k_counts_self)
            if v is None:  # one-hot labels once per call, checked against the first layer
                v = _one_hot(y, flat.shape[0], flat, num_classes)
            elif flat.shape[0] != v.shape[0]:
                raise ValueError(f"features[{i}] has batch size {flat.shape[0]} but there are {v.shape[0]} labels")
            sigmas.append(_label_variation_power(flat, v.to(flat.dtype), self.power, self._others, self.normalized))
        return torch.stack(sigmas)

    def forward(self, features: Sequence[Tensor], y: Tensor, num_classes: int | None = None, *,
                attention_mask: Tensor | None = None) -> Tensor:
        feats = as_feature_list(features, "features")
        if len(feats) < 2:
            raise ValueError(f"the smoothness regularizer compares consecutive layers: needs >= 2 feature tensors, got {len(feats)}")
        sigma = self.variations(feats, y, num_classes, attention_mask=attention_mask)
        return self.gamma**self.power * (sigma[1:] - sigma[:-1]).abs().sum() / (len(feats) - 1)
