"""Independent dense NumPy implementations of the LGG construction (METHOD.md), for cross-checks.

Written from the definitions with explicit loops where that keeps them obviously right; they share no
code with geomlat.
"""
from __future__ import annotations

import numpy as np


def np_similarity(x: np.ndarray, kernel: str, sigma: float | None = None, k: int | None = None) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    b = len(x)
    if kernel in ("cosine", "cosine_shifted"):
        sim = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                ni, nj = np.linalg.norm(x[i]), np.linalg.norm(x[j])
                sim[i, j] = 0.0 if ni == 0 or nj == 0 else x[i] @ x[j] / (ni * nj)
        return sim if kernel == "cosine" else 0.5 + 0.5 * sim
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    if sigma is None:
        kk = min(10, b - 1) if k is None else k
        kth = [np.sort(np.delete(dist[i], i))[kk - 1] for i in range(b)]
        sigma = np.mean(kth) / 3.0
        sigma = sigma if sigma > 0 else 1.0
    return np.exp(-(dist**2) / (2 * sigma**2))


def np_lgg(x, k=None, kernel="cosine", sigma=None, symmetrize="max", normalize=None, self_loops=False,
           mask=None, labels=None, power=1):
    """Dense (B, B) adjacency, following the paper's steps literally."""
    sim = np_similarity(x, kernel, sigma, k)
    b = len(sim)
    knn = np.zeros((b, b), dtype=bool)
    for i in range(b):
        others = [j for j in range(b) if j != i]
        order = sorted(others, key=lambda j: -sim[i, j])
        for j in order[: (b - 1 if k is None else k)]:
            knn[i, j] = True
    edges = (knn | knn.T) if symmetrize == "max" else (knn & knn.T)
    if mask is not None:
        same = np.equal.outer(labels, labels)
        edges &= (~same if mask == "inter" else same)
    if self_loops:
        np.fill_diagonal(edges, True)
    adj = np.where(edges, sim, 0.0)
    if normalize == "sym":
        deg = adj.sum(1)
        d = np.array([1 / np.sqrt(v) if v > 0 else 0.0 for v in deg])
        adj = d[:, None] * adj * d[None, :]
    if power > 1:
        adj = np.linalg.matrix_power(adj, power)
        if not self_loops:
            np.fill_diagonal(adj, 0.0)
    return adj


def np_label_variation(adj: np.ndarray, y: np.ndarray) -> float:
    """tr(V^T L V) from a dense combinatorial Laplacian."""
    v = np.eye(y.max() + 1)[y]
    lap = np.diag(adj.sum(1)) - adj
    return float(np.trace(v.T @ lap @ v))
