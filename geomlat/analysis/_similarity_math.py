"""Numerical building blocks of :mod:`geomlat.analysis.similarity` (private).

- HSIC from a few moments of the two kernel matrices, so that CKA never holds an (N, N) matrix (linear
  kernel: feature space) or holds one (c, N) block of each kernel at a time (RBF kernel), and CKNNA works
  on the N * topk entries of its neighbor masks.
- inner-product k-NN lists with the library's chunked exact search;
- the dynamic programs of the longest common subsequence and the Levenshtein distance, vectorized over
  rows;
- netrep's partial whitening, average ranks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..knn import knn

#: Bytes of one (c, N) float64 kernel block of the chunked RBF kernel.
BLOCK_BYTES = 64 * 2**20


@dataclass
class Moments:
    """Row sums, column sums and diagonal (each (N,)) of an (N, N) matrix A, plus ``n`` = N."""

    rows: Tensor
    cols: Tensor
    diag: Tensor

    @property
    def total(self) -> Tensor:
        return self.rows.sum()


def hsic(a: Moments, b: Moments, cross: Tensor, unbiased: bool) -> Tensor:
    """HSIC of (N, N) matrices A, B from their moments and ``cross`` = sum(A * B^T), as platonic-rep scales it.

    Biased: ``trace(A H B H)`` with H = I - 11^T / N (no 1 / (N-1)^2 factor), expanded as
    ``cross - (c_A . r_B + r_A . c_B) / N + s_A s_B / N^2`` (r row sums, c column sums, s totals).
    Unbiased (Song et al. 2012, eq. 5): the diagonals are zeroed (A~, B~) and
    ``[cross~ + s_A~ s_B~ / ((N-1)(N-2)) - 2 c_A~ . r_B~ / (N-2)] / (N (N-3))`` (``1^T A~ B~ 1 = c_A~ . r_B~``).
    """
    n = a.rows.shape[0]
    if not unbiased:
        return cross - (a.cols @ b.rows + a.rows @ b.cols) / n + a.total * b.total / n**2
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 samples, got {n}")
    cross = cross - a.diag @ b.diag
    ra, ca, rb = a.rows - a.diag, a.cols - a.diag, b.rows - b.diag
    value = cross + ra.sum() * rb.sum() / ((n - 1) * (n - 2)) - 2.0 * (ca @ rb) / (n - 2)
    return value / (n * (n - 3))


def cka_ratio(kl: Tensor, kk: Tensor, ll: Tensor, eps: float, what: str) -> float:
    """``hsic_kl / (sqrt(hsic_kk hsic_ll) + eps)``; ValueError when the denominator's root is 0."""
    root = torch.sqrt(kk * ll)
    if not float(root) > 0:
        raise ValueError(f"{what} is undefined: a representation has no variance (constant rows)")
    return float(kl / (root + eps))


def linear_gram_moments(x: Tensor, y: Tensor) -> tuple[Moments, Moments, Tensor, Tensor, Tensor]:
    """Moments of K = x x^T and L = y y^T and sum(K*L), sum(K*K), sum(L*L), without any (N, N) matrix
    when the feature-space products are cheaper (``|x^T y|_F^2 = sum(K * L)``), else by row blocks."""
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if d1 * d1 + d2 * d2 + d1 * d2 > n * (d1 + d2):  # wide features: the Gram blocks cost less
        return kernel_moments(x, y, lambda a, rows: a[rows] @ a.T)
    kx, ky = x @ x.sum(0), y @ y.sum(0)  # row sums of K, L
    mk = Moments(kx, kx, (x * x).sum(1))
    ml = Moments(ky, ky, (y * y).sum(1))
    return mk, ml, (x.T @ y).square().sum(), (x.T @ x).square().sum(), (y.T @ y).square().sum()


def rbf_block(sigma: float):
    """``block(a, rows)``: rows ``rows`` of the RBF kernel ``exp(-|a_i - a_j|^2 / (2 sigma^2))``."""
    def block(a: Tensor, rows: slice) -> Tensor:
        sq = (a * a).sum(1)
        dist2 = (sq[rows, None] + sq[None, :] - 2.0 * a[rows] @ a.T).clamp_min_(0.0)
        idx = torch.arange(dist2.shape[0], device=a.device)
        dist2[idx, idx + rows.start] = 0.0  # exact zeros on the diagonal
        return torch.exp(-dist2 / (2.0 * sigma**2))
    return block


def kernel_moments(x: Tensor, y: Tensor, block) -> tuple[Moments, Moments, Tensor, Tensor, Tensor]:
    """Moments of symmetric kernels K (of x) and L (of y) computed from (c, N) row blocks ``block(x, rows)``;
    at most one block of each kernel is alive at a time."""
    n = x.shape[0]
    step = max(1, BLOCK_BYTES // (8 * n))
    rk, rl, dk, dl = (x.new_zeros(n) for _ in range(4))
    kl = kk = ll = x.new_zeros(())
    for s in range(0, n, step):
        rows = slice(s, min(s + step, n))
        kb, lb = block(x, rows), block(y, rows)
        idx = torch.arange(kb.shape[0], device=x.device)
        rk[rows], rl[rows] = kb.sum(1), lb.sum(1)
        dk[rows], dl[rows] = kb[idx, idx + s], lb[idx, idx + s]
        kl, kk, ll = kl + (kb * lb).sum(), kk + kb.square().sum(), ll + lb.square().sum()
        del kb, lb
    return Moments(rk, rk, dk), Moments(rl, rl, dl), kl, kk, ll


def sparse_moments(i: Tensor, j: Tensor, v: Tensor, n: int) -> Moments:
    """Moments of the (n, n) matrix with entries ``v`` at (i, j) (no repeated positions)."""
    rows = v.new_zeros(n).index_add_(0, i, v)
    cols = v.new_zeros(n).index_add_(0, j, v)
    diag = v.new_zeros(n).index_add_(0, i[i == j], v[i == j])
    return Moments(rows, cols, diag)


def sparse_cross(i: Tensor, j: Tensor, a: Tensor, b: Tensor, n: int) -> Tensor:
    """sum(A * B^T) = sum_ij A_ij B_ji for A, B with entries ``a``, ``b`` on the same pattern (i, j)."""
    keys = i * n + j
    order = keys.argsort()
    sorted_keys = keys[order]
    want = j * n + i  # position of B_ji
    pos = torch.searchsorted(sorted_keys, want).clamp_max_(keys.numel() - 1)
    found = sorted_keys[pos] == want
    return (a[found] * b[order[pos[found]]]).sum()


def knn_lists(x: Tensor, topk: int) -> Tensor:
    """(N, topk) indices of the largest inner products ``<x_i, x_j>``, j != i, largest first (exact, chunked)."""
    n = x.shape[0]
    if not 1 <= topk < n:
        raise ValueError(f"topk must be in [1, N - 1] = [1, {n - 1}], got {topk}")
    return knn(x, topk, metric="inner", backend="chunked")


def lcs_lengths(a: Tensor, b: Tensor) -> Tensor:
    """(N,) lengths of the longest common subsequence of the rows of ``a`` and ``b`` (N, k) (classic DP,
    each DP cell computed for all rows at once)."""
    n, k = a.shape
    old = a.new_zeros(n, k + 1)
    for r in range(1, k + 1):
        new = a.new_zeros(n, k + 1)
        for c in range(1, k + 1):
            same = a[:, r - 1] == b[:, c - 1]
            new[:, c] = torch.where(same, old[:, c - 1] + 1, torch.maximum(old[:, c], new[:, c - 1]))
        old = new
    return old[:, k]


def edit_distances(a: Tensor, b: Tensor) -> Tensor:
    """(N,) Levenshtein distances (insertion, deletion, substitution cost 1) between the rows of ``a``, ``b``."""
    n, k = a.shape
    old = torch.arange(k + 1, device=a.device).expand(n, k + 1).clone()
    for r in range(1, k + 1):
        new = torch.full_like(old, r)
        for c in range(1, k + 1):
            same = a[:, r - 1] == b[:, c - 1]
            step = torch.minimum(torch.minimum(old[:, c - 1], old[:, c]), new[:, c - 1]) + 1
            new[:, c] = torch.where(same, old[:, c - 1], step)
        old = new
    return old[:, k]


def partial_whiten(xc: Tensor, alpha: float, eigval_tol: float = 1e-7) -> Tensor:
    """netrep's regularized whitening of centered ``xc`` (N, d): ``xc V diag(alpha + (1 - alpha) lam^-1/2) V^T``
    with ``lam, V`` the eigenpairs of ``xc^T xc`` (lam clipped at ``eigval_tol``); the overall scale that
    netrep adds to preserve the variance is left out (the angular distance does not see it)."""
    if alpha > 1 - eigval_tol:
        return xc
    lam, vecs = torch.linalg.eigh(xc.T @ xc)
    d = alpha + (1 - alpha) * lam.clamp_min(eigval_tol).rsqrt()
    return xc @ (vecs * d) @ vecs.T


def average_ranks(v: Tensor) -> Tensor:
    """Ranks 1..n of ``v`` (n,), tied values sharing their average rank (as ``scipy.stats.rankdata``)."""
    order = v.argsort()
    sorted_v = v[order]
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(v.dtype)  # last rank of each group of equal values
    mean_rank = ends - (counts.to(v.dtype) - 1) / 2
    ranks = torch.empty_like(v)
    ranks[order] = mean_rank[inverse]
    return ranks
