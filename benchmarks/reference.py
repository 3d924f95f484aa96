"""Straightforward implementations of the authors' approach, the baselines of the benchmarks.

They follow the authors' public code paths: normalize the rows, build the dense B x B cosine similarity,
choose each row's k nearest neighbors in a Python loop, form the dense Laplacian and raise it to a
matrix power; NNK solves one node at a time with SciPy, either with the authors' pruning solver
(:func:`authors_nnk_weights`, the timed baseline) or with exact NNLS (:func:`scipy_nnk_weights`, the
exactness reference). ``tests/test_benchmarks.py`` checks that each computes the same values as geomlat's
optimized path, except the authors' NNK pruning, a heuristic: it is checked where it is exact (and that it
is never better than the optimum elsewhere).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.linalg
import scipy.optimize
import torch
import torch.nn.functional as F
from torch import Tensor


def loop_knn_mask(sim: Tensor, k: int) -> Tensor:
    """(B, B) bool k-NN mask, max-symmetrized, built row by row in Python (self excluded)."""
    b = sim.shape[0]
    mask = torch.zeros(b, b, dtype=torch.bool)
    s = sim.detach()
    for i in range(b):
        row = s[i].clone()
        row[i] = float("-inf")
        mask[i, torch.argsort(row, descending=True)[:k]] = True
    return mask | mask.T


def dense_cosine_adjacency(x: Tensor, k: int | None = None) -> Tensor:
    """Authors' LGG: unit rows, dense cosine similarity, no self-loops, optional per-row-loop k-NN mask."""
    unit = F.normalize(x.reshape(x.shape[0], -1), dim=1)
    sim = unit @ unit.T
    b = sim.shape[0]
    mask = ~torch.eye(b, dtype=torch.bool) if k is None else loop_knn_mask(sim, k)
    return sim * mask


def authors_label_variation(x: Tensor, y: Tensor, m: int = 2, k: int | None = None) -> Tensor:
    """``tr(V^T L^m V)`` with the dense Laplacian ``L = D - A`` and ``torch.linalg.matrix_power``."""
    adj = dense_cosine_adjacency(x, k)
    lap = torch.diag(adj.sum(1)) - adj
    v = F.one_hot(y, int(y.max()) + 1).to(adj.dtype)
    return torch.trace(v.T @ torch.linalg.matrix_power(lap, m) @ v)


def authors_regularizer(features: Sequence[Tensor], y: Tensor, m: int = 2, gamma: float = 0.01, k: int | None = None) -> Tensor:
    """Laplacian-networks regularizer, authors' way: ``gamma^m sum_l |sigma_{l+1} - sigma_l| / (L - 1)``."""
    sigma = torch.stack([authors_label_variation(f, y, m, k) for f in features])
    return gamma**m * (sigma[1:] - sigma[:-1]).abs().sum() / (len(features) - 1)


def authors_lgg(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Normalized cosine k-NN LGG, authors' way: ``(edge_index (2, E), edge_weight (E,))``, D^-1/2 A D^-1/2."""
    adj = dense_cosine_adjacency(x, k)
    deg = adj.sum(1)
    inv = torch.where(deg > 0, deg.clamp_min(1e-30).rsqrt(), torch.zeros_like(deg))
    adj = inv[:, None] * adj * inv[None, :]
    edge_index = (adj != 0).nonzero().T
    return edge_index, adj[edge_index[0], edge_index[1]]


def _node_kernels(x: np.ndarray, neighbors: np.ndarray):
    """Per node i (cosine kernel): ``(i, K_SS (k, k), K_Si (k,))`` of its candidates, one node at a time."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    for i in range(neighbors.shape[0]):
        xs = unit[neighbors[i]]
        yield i, xs @ xs.T, xs @ unit[i]


def scipy_nnk_weights(x: np.ndarray, neighbors: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """NNK weights node by node (cosine kernel): per node, K_SS and K_Si, Cholesky and ``scipy.optimize.nnls``.

    ``argmin_{t >= 0} 1/2 t^T K t - b^T t`` equals ``argmin_{t >= 0} |L^T t - L^{-1} b|^2`` with K = L L^T.

    Args:
        x: (N, d) float64 points; neighbors: (N, k) candidate indices. Returns (N, k) weights.
    """
    out = np.zeros(neighbors.shape)
    for i, K, b in _node_kernels(x, neighbors):
        L = scipy.linalg.cholesky(K, lower=True, check_finite=False)
        theta = scipy.optimize.nnls(L.T, scipy.linalg.solve_triangular(L, b, lower=True, check_finite=False))[0]
        theta[theta < tol] = 0.0
        out[i] = theta
    return out


def authors_nnk_weights(x: np.ndarray, neighbors: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """NNK weights node by node with the authors' pruning solver (cosine kernel), the baseline of the NNK benchmark.

    Follows ``non_negative_qpsolver`` of the authors' public NNK code (Shekkizhar & Ortega 2020), called per
    node with ``A = K_SS``, ``b = x_init = K_Si`` and ``x_tol = tol``: if a similarity exceeds ``1 - tol``
    (a duplicate point) only those candidates keep their similarity as weight; otherwise the active set
    starts as ``{j: b_j > tol}`` and each iteration solves ``K_PP t_P = b_P`` with a LAPACK Cholesky
    (``scipy.linalg.cho_factor`` / ``cho_solve``; a singular K_PP gets a ridge ``max(tol, 1e-10) I``, where
    the authors add ``tol`` to the failed factor), ``t = 0`` off P, and drops from P every coordinate with ``t_j < tol``
    (never re-added). It stops when ``max |t_j|`` over those coordinates is ``<= tol`` or after ``50 k``
    iterations; weights below ``tol`` become 0.

    This is a pruning heuristic, not an exact NNLS solver: a coordinate dropped early is never re-added,
    so it can miss the optimum that :func:`scipy_nnk_weights` finds. ``tol``: default 1e-10, the default
    of :func:`geomlat.nnk.nnk_weights` (the authors use 1e-10 or 1e-6).

    Args:
        x: (N, d) float64 points; neighbors: (N, k) candidate indices. Returns (N, k) weights >= 0.
    """
    k = neighbors.shape[1]
    out = np.zeros(neighbors.shape)
    for i, K, b in _node_kernels(x, neighbors):
        collapse = b > 1 - tol
        if collapse.any():  # near-duplicate candidates: keep only them, weight = similarity
            out[i] = np.where(collapse, b, 0.0)
            continue
        keep = b > tol
        theta = b.copy()
        for _ in range(50 * k):
            theta = np.zeros(k)
            if keep.any():
                sub = K[np.ix_(keep, keep)]
                try:
                    factor = scipy.linalg.cho_factor(sub, check_finite=False)
                except np.linalg.LinAlgError:  # singular K_PP (duplicate candidates): small ridge
                    factor = scipy.linalg.cho_factor(sub + max(tol, 1e-10) * np.eye(len(sub)), check_finite=False)
                theta[keep] = scipy.linalg.cho_solve(factor, b[keep], check_finite=False)
            low = theta < tol
            check = np.abs(theta[low]).max() if low.any() else 0.0
            keep &= ~low
            if check <= tol:
                break
        theta[theta < tol] = 0.0
        out[i] = theta
    return out


# ---- platonic-rep's metrics.py approach (minyoungg/platonic-rep), rewritten: the baseline of bench_similarity
def platonic_knn(feats: Tensor, topk: int) -> Tensor:
    """Dense (N, N) inner products, diagonal set to -1e8, full ``argsort`` of every row, first topk."""
    return (feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]


def platonic_mutual_knn(a: Tensor, b: Tensor, topk: int) -> float:
    """Two (N, N) 0/1 masks of the neighbor lists, their product summed per row."""
    ka, kb = platonic_knn(a, topk), platonic_knn(b, topk)
    n = ka.shape[0]
    rows = torch.arange(n)[:, None]
    ma, mb = torch.zeros(n, n), torch.zeros(n, n)
    ma[rows, ka] = 1.0
    mb[rows, kb] = 1.0
    return float(((ma * mb).sum(1) / topk).mean())


def platonic_lcs_knn(a: Tensor, b: Tensor, topk: int) -> float:
    """Neighbor lists as above, then the LCS dynamic program in Python, one row at a time."""
    ka, kb = platonic_knn(a, topk).tolist(), platonic_knn(b, topk).tolist()
    total = 0
    for x, y in zip(ka, kb):
        dp = [[0] * (topk + 1) for _ in range(topk + 1)]
        for i in range(1, topk + 1):
            for j in range(1, topk + 1):
                dp[i][j] = dp[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
        total += dp[topk][topk]
    return total / len(ka)


def platonic_linear_cka(a: Tensor, b: Tensor) -> float:
    """Gram matrices K, L and the centring matrix H (three (N, N) matrices), ``trace(K H L H)`` products."""
    K, L = a @ a.T, b @ b.T
    H = torch.eye(K.shape[0], dtype=K.dtype) - 1 / K.shape[0]
    hsic = lambda P, Q: torch.trace(P @ H @ Q @ H)  # noqa: E731
    return float(hsic(K, L) / (torch.sqrt(hsic(K, K) * hsic(L, L)) + 1e-6))
