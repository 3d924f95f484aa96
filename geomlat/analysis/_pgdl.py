"""Feature-level parts of the PGDL 2020 competition entries (Predicting Generalization in Deep Learning, NeurIPS
2020), rewritten from their public code in PyTorch float64; the model-level measures are in
:mod:`geomlat.analysis.measures`.

Lassance et al. (team of the seed author, code ``cadurosar/pgdl``): label-variation smoothness
``tr(Y^T L Y)`` of the one-hot labels Y (N, C) on graphs of a batch's representations:

- ``VR/complexity.py`` (:func:`smoothness_rate`): cosine similarities clipped to [0, 1], k = 20 nearest
  (``top_k`` of k + 1 with self, ties at the threshold kept, OR-symmetrized, weights = the cosine),
  combinatorial Laplacian ``D - A``, ``tr(Y^T L Y) / (2 * 50 * 1000)``; the measure of a batch is the mean
  of ``|s_l - s_{l+1}|`` over consecutive layers (theirs: the inputs of the last two layers and the output).
- ``WCV/complexity.py`` (:func:`smoothness_max`): rows L2-normalized, RBF ``exp(-g d^2)`` with
  ``g = 1 / (3 std(d^2))`` (std over the whole (N, N) matrix), 1-NN (``top_k`` of 2) binary adjacency,
  OR-symmetrized, normalized Laplacian ``I - D^-1/2 A D^-1/2``, ``clip(tr(Y^T L Y) / (2 * 2 * 500), 0, 1000)``;
  the measure is the max over layers.
- ``VPM_1/complexity.py``: the same graph without the symmetrization (``symmetric=False``), on the input of
  the last layer of input-mixup'd samples (Beta(2, 2), soft labels), see :func:`input_mixup`.

Natekar & Sharma (winners, ``parthnatekar/pgdl``): :func:`davies_bouldin` (their ``complexityDB.db``, the
sklearn formula) and :func:`intraclass_mixup_pairs` (their ``complexityMixup.intrapolateImages``).

The normalizing constants (1e5, 2000) are theirs, fixed whatever the batch size: they only scale a measure.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.detach().reshape(x.shape[0], -1).double()


def _top_adjacency(matrix: Tensor, k: int, symmetric: bool) -> Tensor:
    """Their ``knn_tf``: 1 where ``matrix >= `` the row's (k+1)-th largest value (self included, ties kept),
    0 on the diagonal; OR-symmetrized (``clip(A + A^T, 0, 1)``) when ``symmetric``. (N, N) float64."""
    kth = matrix.topk(k + 1, dim=1).values[:, -1:]
    adj = (matrix >= kth).double()
    adj.fill_diagonal_(0.0)
    return (adj + adj.T).clamp(0, 1) if symmetric else adj


def smoothness_cosine_knn(x: Tensor, onehot: Tensor, k: int = 20) -> float:
    """``tr(Y^T (D - A) Y) / 1e5`` on the cosine k-NN graph of ``VR/complexity.py`` (module docstring).

    Args: x (N, ...) representations; onehot (N, C) labels (one-hot or soft); k neighbors."""
    u = F.normalize(_flat(x), dim=1)
    cos = (u @ u.T).clamp(0, 1)
    adj = _top_adjacency(cos, k, symmetric=True) * cos
    lap = torch.diag(adj.sum(1)) - adj
    y = onehot.double()
    return float(torch.trace(y.T @ lap @ y) / (2 * 50 * 1000))


def smoothness_rbf_1nn(x: Tensor, onehot: Tensor, symmetric: bool = True) -> float:
    """``clip(tr(Y^T (I - D^-1/2 A D^-1/2) Y) / 2000, 0, 1000)`` on the RBF 1-NN graph of ``WCV`` (symmetric)
    or ``VPM_1`` (``symmetric=False``); module docstring. Args: x (N, ...); onehot (N, C)."""
    u = F.normalize(_flat(x), dim=1)
    r = (u * u).sum(1, keepdim=True)
    d2 = r - 2 * u @ u.T + r.T
    gamma = 1.0 / (3.0 * d2.std(unbiased=False).abs())
    adj = _top_adjacency(torch.exp(-gamma * d2), 1, symmetric)
    dinv = adj.sum(1).pow(-0.5)
    lap = torch.eye(len(u), dtype=u.dtype) - dinv[:, None] * adj * dinv[None, :]
    y = onehot.double()
    return float((torch.trace(y.T @ lap @ y) / (2 * 2 * 500)).clamp(0, 1000))


def smoothness_rate(features: list[Tensor], onehot: Tensor, k: int = 20) -> float:
    """Mean ``|s_l - s_{l+1}|`` of :func:`smoothness_cosine_knn` over consecutive representations (VR entry).

    Args: features: the L >= 2 representations (N, ...) of one batch, in layer order; onehot (N, C)."""
    if len(features) < 2:
        raise ValueError(f"the smoothness rate needs at least 2 layers, got {len(features)}")
    s = [smoothness_cosine_knn(f, onehot, k) for f in features]
    return sum(abs(a - b) for a, b in zip(s, s[1:])) / (len(s) - 1)


def smoothness_max(features: list[Tensor], onehot: Tensor) -> float:
    """Max over layers of :func:`smoothness_rbf_1nn` (WCV entry). Args: features (N, ...) each; onehot (N, C)."""
    if not features:
        raise ValueError("smoothness_max needs at least one layer")
    return max(smoothness_rbf_1nn(f, onehot) for f in features)


def input_mixup(x: Tensor, onehot: Tensor, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The mixup of ``VPM_1``: partner = a random permutation of the batch, ``lambda_i ~ Beta(alpha, alpha)``
    per sample, ``x~ = lambda x + (1 - lambda) x[perm]`` and the same mix of the one-hot labels.

    Returns ``(mixed inputs (N, ...), soft labels (N, C))``."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator)
    # Beta(alpha, alpha) = G1 / (G1 + G2) with independent Gamma(alpha, 1) draws (from ``generator``)
    a, b = (torch._standard_gamma(torch.full((n,), float(alpha), dtype=torch.float64), generator=generator) for _ in range(2))
    lam = a / (a + b)
    shape = (n,) + (1,) * (x.dim() - 1)
    mixed = lam.to(x.dtype).view(shape) * x + (1 - lam.to(x.dtype)).view(shape) * x[perm]
    return mixed, lam[:, None] * onehot.double() + (1 - lam[:, None]) * onehot.double()[perm]


def davies_bouldin(x: Tensor, labels: Tensor) -> float:
    """Davies-Bouldin index of the classes of ``x`` (the formula of ``sklearn.metrics.davies_bouldin_score``
    and of Natekar & Sharma's ``db``): ``mean_i max_{j != i} (s_i + s_j) / |c_i - c_j|`` with ``c_i`` the class
    centroid and ``s_i`` the mean distance of its members to it; 0 when all ``s`` or all centroid distances are 0.
    Lower = better separated classes.

    Args: x (N, ...) representations; labels (N,) with 2 <= classes < N."""
    flat = _flat(x)
    _, y = torch.unique(labels, return_inverse=True)
    c = int(y.max()) + 1
    if not 1 < c < flat.shape[0]:
        raise ValueError(f"the Davies-Bouldin index needs 2 to N - 1 classes, got {c} for N = {flat.shape[0]}")
    centroids = torch.stack([flat[y == i].mean(0) for i in range(c)])
    intra = torch.stack([(flat[y == i] - centroids[i]).norm(dim=1).mean() for i in range(c)])
    dist = torch.cdist(centroids, centroids)
    if bool(torch.allclose(intra, torch.zeros_like(intra))) or bool(torch.allclose(dist, torch.zeros_like(dist))):
        return 0.0
    dist = torch.where(dist == 0, torch.full_like(dist, float("inf")), dist)
    return float(((intra[:, None] + intra[None, :]) / dist).amax(1).mean())


def intraclass_mixup_pairs(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Midpoints ``(x_i + x_j) / 2`` of every pair i < j of samples of the same class (Natekar & Sharma's
    ``intrapolateImages`` with alpha = 0.5), with that class. Returns ``(inputs (P, ...), labels (P,))``."""
    parts, ys = [], []
    for c in torch.unique(labels).tolist():
        xc = x[labels == c]
        i, j = torch.triu_indices(len(xc), len(xc), 1)
        parts.append((xc[i] + xc[j]) / 2)
        ys.append(torch.full((len(i),), c, dtype=torch.long))
    return torch.cat(parts), torch.cat(ys)
