"""Manifold graph metrics (MGMs) from NNK neighborhoods (``papers/004``; Cosentino et al. 2022).

Each node's NNK neighborhood (its neighbors with ``theta > 0``, before symmetrization) is a polytope
shaped by the local geometry. From it:

- ``n_neighbors_``: number of NNK neighbors;
- ``diameter_``: largest distance between two NNK neighbors after unit-normalizing the features (in
  [0, 2]; 0 with fewer than 2 neighbors);
- ``local_dim_``: number of principal directions of the vectors ``x_j - x_i`` to the NNK neighbors
  needed to reach ``energy`` (default 90 %) of their squared norm (``participation_ratio_`` gives the
  continuous ``(sum s^2)^2 / sum s^4``); vectors are taken in the kernel's space (unit-normalized features
  for the cosine kernels, raw features for RBF);
- ``tangent_``: the ``n_directions`` leading principal directions (N, n_directions, d), zero-padded.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_features
from ..graphs import feature_vectors
from ..kernels import get_kernel
from ..nnk import NNKResult, kernel_blocks, nnk_weights, solve_nnk_exact


class ManifoldGraphMetrics:
    """NNK manifold graph metrics of a point cloud, sklearn style (``fit(x)`` then attributes ending in ``_``).

    Args:
        k: initial k-NN size of the NNK solve.
        kernel, sigma, tol, solver, knn_backend, chunk_size: see :func:`geomlat.nnk.nnk_weights`.
        energy: fraction of the squared norm explained by ``local_dim_`` directions.
        n_directions: number of tangent directions kept in ``tangent_``.

    Attributes after ``fit``: ``nnk_`` (:class:`NNKResult`), ``n_neighbors_`` (N,), ``diameter_`` (N,),
    ``local_dim_`` (N,) long, ``participation_ratio_`` (N,), ``tangent_`` (N, n_directions, d),
    ``summary_`` dict of means/medians.
    """

    def __init__(self, k: int = 15, kernel: str = "cosine", sigma: float | None = None, tol: float = 1e-10,
                 solver: str = "exact", energy: float = 0.9, n_directions: int = 2, knn_backend: str = "dense",
                 chunk_size: int | None = None, node_chunk: int = 2048):
        if not 0 < energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {energy}")
        if n_directions < 1:
            raise ValueError(f"n_directions must be >= 1, got {n_directions}")
        self.k, self.kernel, self.sigma, self.tol, self.solver = k, kernel, sigma, tol, solver
        self.energy, self.n_directions = energy, n_directions
        self.knn_backend, self.chunk_size, self.node_chunk = knn_backend, chunk_size, node_chunk

    def fit(self, x: Tensor, *, attention_mask: Tensor | None = None, reduce: str | None = None) -> "ManifoldGraphMetrics":
        """Metrics of the (N, ...) points ``x`` ((N, T, H) token features with ``attention_mask`` (N, T), 1 on real
        tokens, and ``reduce``: :func:`geomlat.sequences.sample_vectors`, padding never matters)."""
        flat = check_features(feature_vectors(x, attention_mask, reduce, "ManifoldGraphMetrics.fit: x")).detach()
        res = nnk_weights(flat, self.k, self.kernel, self.sigma, self.tol, self.solver, self.knn_backend, self.chunk_size)
        self.nnk_ = res
        points = get_kernel(self.kernel).prepare(flat.double())
        unit = F.normalize(flat.double(), dim=1, eps=1e-12)
        mask = res.weights > 0
        n = flat.shape[0]
        outs = [[], [], [], []]
        for s in range(0, n, self.node_chunk):  # bound the (chunk, k, d) memory
            sl = slice(s, min(n, s + self.node_chunk))
            idx = torch.arange(sl.start, sl.stop, device=flat.device)
            part = _polytope_stats_rows(points, unit, idx, res.neighbors[sl], mask[sl], self.energy, self.n_directions)
            for o, p in zip(outs, part):
                o.append(p)
        self.diameter_, self.local_dim_, self.participation_ratio_, self.tangent_ = (torch.cat(o) for o in outs)
        self.n_neighbors_ = mask.sum(1)
        self.summary_ = {
            "n_neighbors_mean": float(self.n_neighbors_.double().mean()),
            "diameter_mean": float(self.diameter_.mean()),
            "diameter_median": float(self.diameter_.median()),
            "local_dim_mean": float(self.local_dim_.double().mean()),
            "local_dim_median": float(self.local_dim_.double().median()),
            "participation_ratio_mean": float(self.participation_ratio_.mean()),
        }
        return self


def _polytope_stats_rows(points, unit, idx, nb, mask, energy, n_dir):
    """:func:`_polytope_stats` for the centers ``idx`` (c,) with candidates ``nb`` (c, k)."""
    c, k = nb.shape
    u = unit[nb]
    dist = torch.cdist(u, u)
    pair = mask[:, :, None] & mask[:, None, :]
    diameter = torch.where(pair, dist, torch.zeros_like(dist)).flatten(1).amax(1)
    vec = (points[nb] - points[idx][:, None, :]) * mask[:, :, None]
    gram = vec @ vec.transpose(1, 2)
    evals, evecs = torch.linalg.eigh(gram)
    evals, evecs = evals.flip(-1).clamp_min(0.0), evecs.flip(-1)  # descending squared singular values
    total = evals.sum(1)
    has = total > 0
    safe = torch.where(has, total, torch.ones_like(total))
    cum = evals.cumsum(1) / safe[:, None]
    dim = torch.where(has, (cum < energy - 1e-9).sum(1) + 1, torch.zeros_like(has, dtype=torch.long))
    pr = torch.where(has, total**2 / (evals**2).sum(1).clamp_min(1e-300), torch.zeros_like(total))
    m = min(n_dir, k)
    sv = evals[:, :m].sqrt()
    ok = sv > 1e-9 * safe.sqrt()[:, None]
    # right singular vectors: v = vec^T u / s
    dirs = torch.einsum("ckd,ckm->cmd", vec, evecs[:, :, :m]) / torch.where(ok, sv, torch.ones_like(sv))[:, :, None]
    dirs = dirs * ok[:, :, None]
    if m < n_dir:
        dirs = torch.cat([dirs, dirs.new_zeros(c, n_dir - m, points.shape[1])], 1)
    return diameter, dim, pr, dirs


def geometric_stability(features_a: Tensor, features_b: Tensor, k: int = 10, *, attention_mask: Tensor | None = None,
                        reduce: str | None = None, **nnk_options) -> dict:
    """Agreement of the NNK neighborhoods of the same N points under two models / seeds (``papers/004``).

    ``attention_mask`` (N, T) and ``reduce``: (N, T, H) token features of both models, as
    :func:`geomlat.sequences.sample_vectors` (padding never matters).

    Returns:
        ``{"jaccard": mean over nodes of |N_a(i) ∩ N_b(i)| / |N_a(i) ∪ N_b(i)| (directed NNK neighbor
        sets; two empty sets count as 1), "jaccard_per_node": (N,), "weight_correlation": Pearson
        correlation of the directed weights theta_ij over the union of both edge sets}``. 1 = same local
        geometry, even if the features themselves differ (different widths are fine).
    """
    fa = check_features(feature_vectors(features_a, attention_mask, reduce, "geometric_stability: features_a"), "features_a")
    fb = check_features(feature_vectors(features_b, attention_mask, reduce, "geometric_stability: features_b"), "features_b")
    if fa.shape[0] != fb.shape[0]:
        raise ValueError(f"features_a and features_b must describe the same points, got {fa.shape[0]} and {fb.shape[0]}")
    n = fa.shape[0]
    ra, rb = nnk_weights(fa, k, **nnk_options), nnk_weights(fb, k, **nnk_options)

    def dense_rows(r: NNKResult) -> Tensor:
        w = torch.zeros(n, n, dtype=torch.float64, device="cpu")  # gathered on the CPU
        w.scatter_(1, r.neighbors.cpu(), r.weights.double().cpu())
        return w

    wa, wb = dense_rows(ra), dense_rows(rb)
    inter = ((wa > 0) & (wb > 0)).sum(1).double()
    union = ((wa > 0) | (wb > 0)).sum(1).double()
    jac = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    sel = (wa > 0) | (wb > 0)
    va, vb = wa[sel], wb[sel]
    va, vb = va - va.mean(), vb - vb.mean()
    den = va.norm() * vb.norm()
    corr = float((va * vb).sum() / den) if float(den) > 0 else float("nan")
    return {"jaccard": float(jac.mean()), "jaccard_per_node": jac, "weight_correlation": corr}


def _call_augment(augment: Callable, x: Tensor, generator: torch.Generator) -> Tensor:
    try:
        n_params = len(inspect.signature(augment).parameters)
    except (TypeError, ValueError):
        n_params = 1
    return augment(x, generator) if n_params >= 2 else augment(x)


@torch.no_grad()
def augmentation_invariance(
    model_or_features_fn: nn.Module | Callable[[Tensor], Tensor],
    x: Tensor,
    augment: Callable,
    n_aug: int = 8,
    kernel: str = "cosine",
    seed: int = 0,
) -> Tensor:
    """NNK polytope diameter of each point among its own augmented versions (``papers/004``, Fig. 2).

    For each input x_i, the features of ``n_aug`` augmentations of x_i are the NNK candidates of f(x_i);
    the diameter (unit-normalized, in [0, 2]) of the selected augmentations measures how far the
    augmentations move the representation: small = invariant.

    Args:
        model_or_features_fn: a module (run in eval mode) or any callable ``(B, ...) -> (B, ...)`` features.
        x: (N, ...) inputs. augment: ``augment(x)`` or ``augment(x, generator)`` (the dataset's batch
            augmentation), applied ``n_aug`` times. seed: seed of that generator.

    Returns:
        (N,) diameters, float64.
    """
    if n_aug < 2:
        raise ValueError(f"n_aug must be >= 2 to measure a diameter, got {n_aug}")
    module = model_or_features_fn if isinstance(model_or_features_fn, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        gen = torch.Generator().manual_seed(seed)
        base = check_features(model_or_features_fn(x))
        augs = torch.stack([check_features(model_or_features_fn(_call_augment(augment, x, gen))) for _ in range(n_aug)], 1)
    finally:
        if module is not None:
            module.train(was_training)
    n = base.shape[0]
    # all points of one system: [base_i, aug_i1..aug_in]; center index 0, candidates 1..n_aug
    kern = get_kernel(kernel)
    pts = kern.prepare(torch.cat([base[:, None], augs], 1).reshape(n * (n_aug + 1), -1).double())
    offsets = torch.arange(n, device=pts.device) * (n_aug + 1)
    cand = offsets[:, None] + torch.arange(1, n_aug + 1, device=pts.device)[None, :]
    K, b, _ = kernel_blocks(pts, offsets, cand, kern, 1.0 if kern.uses_sigma else None)
    theta, _ = solve_nnk_exact(K, b)
    mask = theta > 1e-10
    unit = F.normalize(augs.double(), dim=2, eps=1e-12)
    dist = torch.cdist(unit, unit)
    pair = mask[:, :, None] & mask[:, None, :]
    return torch.where(pair, dist, torch.zeros_like(dist)).flatten(1).amax(1)
