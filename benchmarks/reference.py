"""Straightforward implementations of the authors' approach, the baselines of the benchmarks.

They follow the authors' public code paths: normalize the rows, build the dense B x B cosine similarity,
choose each row's k nearest neighbours in a Python loop, form the dense Laplacian and raise it to a
matrix power; NNK solves one node at a time with SciPy. ``tests/test_benchmarks.py`` checks that each
computes the same values as geomlat's optimized path.
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


def scipy_nnk_weights(x: np.ndarray, neighbors: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """NNK weights node by node (cosine kernel): per node, K_SS and K_Si, Cholesky and ``scipy.optimize.nnls``.

    ``argmin_{t >= 0} 1/2 t^T K t - b^T t`` equals ``argmin_{t >= 0} |L^T t - L^{-1} b|^2`` with K = L L^T.

    Args:
        x: (N, d) float64 points; neighbors: (N, k) candidate indices. Returns (N, k) weights.
    """
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n, k = neighbors.shape
    out = np.zeros((n, k))
    for i in range(n):
        xs = unit[neighbors[i]]
        K = xs @ xs.T
        b = xs @ unit[i]
        L = scipy.linalg.cholesky(K, lower=True, check_finite=False)
        theta = scipy.optimize.nnls(L.T, scipy.linalg.solve_triangular(L, b, lower=True, check_finite=False))[0]
        theta[theta < tol] = 0.0
        out[i] = theta
    return out
