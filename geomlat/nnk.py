"""Non-negative kernel regression (NNK) graphs (Shekkizhar & Ortega, ICASSP 2020; ``papers/004``).

For every node i with k-NN set S (from :func:`geomlat.knn`) and kernel matrix K, NNK solves the
non-negative kernel regression

    theta_i = argmin_{theta >= 0}  1/2 theta^T K_SS theta - K_Si^T theta

and keeps as neighbours of i the points of S with ``theta > tol``: a neighbour is dropped when it is
geometrically redundant given a closer one, so the neighbourhood is a polytope shaped by the local
geometry rather than by density. The residual is ``e_i = K_ii - 2 theta^T K_Si + theta^T K_SS theta``.

Solvers (both batched over nodes, no Python loop per node):

- ``"exact"``: a batched Lawson-Hanson active-set method. Every node keeps a passive set P; each
  iteration solves the masked systems ``K_PP s_P = b_P`` (inactive rows/cols replaced by the identity)
  with one batched Cholesky, then either accepts s (feasible: add the index of largest positive
  gradient ``b - K theta`` to P) or steps back to the boundary and drops the indices hitting 0. A node
  stops when the KKT conditions hold (``theta >= 0``, gradient <= kkt_tol off P, = 0 on P). The result
  is the exact optimum (float64), unlike the authors' node-by-node pruning heuristic.
- ``"approx"``: projected gradient ``theta <- max(theta + eta (b - K theta), 0)``, ``eta = 1/lambda_max(K_SS)``
  (the authors' ISTA-style batched solver), ``approx_steps`` iterations from ``theta = 0``.

Edge rules (both return a symmetric graph):

- ``"max"`` (default): ``W = max(Theta, Theta^T)``: every solved weight is kept.
- ``"reference"``: the authors' code: keep ``theta_ij`` only where j is in S_i, i is in S_j and
  ``e_i < e_j`` (strictly; so non-reciprocal k-NN pairs and exact residual ties disappear), then
  ``max(W, W^T)``. It is sparser but can isolate vertices, which is why it is not the default.

Memory: the k-NN search uses ``knn_backend``/``chunk_size``; the solve runs over blocks of nodes whose
(block, k, d) gathered features stay under :data:`SOLVE_BYTES`, so tens of thousands of points fit.
Weights are computed without autograd (``torch.no_grad``) in float64 and returned in ``x``'s dtype.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from ._checks import check_choice, check_features, check_k, check_labels
from .knn import BACKENDS, knn

NNK_KERNELS = ("cosine", "rbf", "cosine_shifted")
SOLVERS = ("exact", "approx")
EDGE_RULES = ("max", "reference")

#: Bytes of the (block, k, d) float64 gathered features per solve block.
# 24 MiB blocks (about 1,000 nodes at k = 30, d = 64) keep the batched solves cache-friendly: about 2x faster than
# one block of 5,000 nodes on a 2-core CPU (N = 5,000, d = 64, k = 30), same results.
SOLVE_BYTES = 24 * 2**20


@dataclass
class NNKResult:
    """Directed NNK solution of every node.

    Attributes:
        neighbors: (N, k) long, the k-NN candidates of each node (nearest first).
        weights: (N, k) NNK weights theta (0 where pruned), dtype of the input.
        residual: (N,) ``e_i``, float64.
        kernel: the kernel used; ``sigma``: RBF bandwidth (None for the cosine kernels).
    """

    neighbors: Tensor
    weights: Tensor
    residual: Tensor
    kernel: str
    sigma: float | None = None

    @property
    def mask(self) -> Tensor:
        """(N, k) bool: which candidates are NNK neighbours (theta > 0)."""
        return self.weights > 0


# --------------------------------------------------------------------------------------- solvers
def _masked_solve(K: Tensor, b: Tensor, passive: Tensor) -> Tensor:
    """Solve ``K_PP s_P = b_P`` per batch, ``s = 0`` off P. K (c, k, k), b (c, k), passive (c, k) bool.

    Inactive rows/columns are replaced by those of the identity, so one batched Cholesky solves all.
    """
    eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
    system = torch.where(passive[:, :, None] & passive[:, None, :], K, eye)
    rhs = torch.where(passive, b, torch.zeros_like(b))[:, :, None]
    chol, info = torch.linalg.cholesky_ex(system)
    bad = info != 0
    if bool(bad.any()):  # numerically singular K_PP (near-duplicate points): small ridge, like the reference
        ridge = 1e-10 * system[bad].diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)
        chol_bad, _ = torch.linalg.cholesky_ex(system[bad] + ridge[:, None, None] * eye)
        chol = chol.clone()
        chol[bad] = chol_bad
    s = torch.cholesky_solve(rhs, chol)[..., 0]  # both triangular solves in one LAPACK call per node
    return torch.where(passive, s, torch.zeros_like(s))


def _solve_bpp(K: Tensor, b: Tensor, threshold: Tensor, max_iter: int) -> tuple[Tensor, Tensor]:
    """Block principal pivoting (Kim & Park, SIAM J. Sci. Comput. 2011, after Judice & Pires 1994) for
    ``min_{t >= 0} 1/2 t^T K t - b^T t``, batched over nodes.

    Each node keeps a free set F (t_F = K_FF^-1 b_F, t = 0 off F, ``y = K t - b``); the infeasible
    coordinates ``V = {j in F: t_j < 0} U {j not in F: y_j < -threshold}`` are all exchanged at once while
    |V| keeps decreasing (at most 3 non-improving full exchanges in a row), else only the largest index of V
    (the backup rule that guarantees termination). An empty V is the KKT optimum. Unlike Lawson-Hanson,
    which adds one coordinate per iteration (about one iteration per NNK neighbour), a node usually
    finishes in 2-4 iterations. Nodes are dropped from the working arrays as soon as they are done.

    Returns ``(theta (c, k), converged (c,) bool)``; unconverged rows are 0.
    """
    c, k = b.shape
    theta = torch.zeros_like(b)
    converged = torch.zeros(c, dtype=torch.bool, device=b.device)
    order = torch.arange(1, k + 1, device=b.device)
    idx = torch.arange(c, device=b.device)
    free = b > threshold[:, None]  # from t = 0 (y = -b): every coordinate with y_j < -threshold enters
    ninf = torch.full((c,), k + 1, dtype=torch.long, device=b.device)
    alpha = torch.full((c,), 3, dtype=torch.long, device=b.device)
    Ka, ba, tha = K, b, threshold
    for _ in range(max_iter):
        s = _masked_solve(Ka, ba, free)
        y = torch.einsum("cij,cj->ci", Ka, s) - ba
        bad = (free & (s < 0)) | (~free & (y < -tha[:, None]))
        nbad = bad.sum(1)
        ok = nbad == 0
        theta[idx[ok]] = s[ok].clamp_min(0.0)
        converged[idx[ok]] = True
        better = nbad < ninf
        full_exchange = better | (alpha >= 1)
        alpha = torch.where(better, torch.full_like(alpha, 3), torch.where(alpha >= 1, alpha - 1, alpha))
        ninf = torch.where(better, nbad, ninf)
        single = F.one_hot((bad * order).argmax(1), k).bool()  # backup rule: the largest infeasible index
        free = free ^ torch.where(full_exchange[:, None], bad, single & bad)
        keep = ~ok
        if not bool(keep.any()):
            break
        if not bool(keep.all()):
            idx, Ka, ba, tha, free, ninf, alpha = idx[keep], Ka[keep], ba[keep], tha[keep], free[keep], ninf[keep], alpha[keep]
    return theta, converged


def solve_nnk_exact(K: Tensor, b: Tensor, kkt_tol: float = 1e-10, max_iter: int | None = None) -> tuple[Tensor, Tensor]:
    """Exact batched non-negative QP ``min_{t >= 0} 1/2 t^T K t - b^T t``.

    Block principal pivoting first (:func:`_solve_bpp`, a few batched Cholesky solves); the rare nodes it
    has not finished after ``2 k + 10`` iterations go through the Lawson-Hanson active-set method below.
    Both stop only at the KKT conditions, so the result is the same optimum.

    Args:
        K: (c, k, k) symmetric positive semi-definite (float64 recommended).
        b: (c, k).
        kkt_tol: a zero coordinate may enter P only if its gradient ``(b - K t)_j`` exceeds
            ``kkt_tol * max(1, max|b|)``.
        max_iter: iterations (default ``5 k + 10``); nodes not converged by then keep their current
            feasible iterate and a ``RuntimeWarning`` is issued.

    Returns:
        ``(theta (c, k) >= 0, converged (c,) bool)``.
    """
    c, k = b.shape
    max_iter = 5 * k + 10 if max_iter is None else max_iter
    scale = b.abs().amax(dim=1).clamp_min(1.0)
    theta_bpp, done_bpp = _solve_bpp(K, b, kkt_tol * scale, 2 * k + 10)
    if bool(done_bpp.all()):
        return theta_bpp, done_bpp
    rest = (~done_bpp).nonzero().squeeze(1)
    theta_lh, done_lh = _solve_lawson_hanson(K[rest], b[rest], kkt_tol, max_iter)
    theta_bpp[rest] = theta_lh
    done_bpp[rest] = done_lh
    return theta_bpp, done_bpp


def _solve_lawson_hanson(K: Tensor, b: Tensor, kkt_tol: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Lawson-Hanson active set, batched (the fallback of :func:`solve_nnk_exact`, same arguments)."""
    c, k = b.shape
    scale = b.abs().amax(dim=1).clamp_min(1.0)
    theta = torch.zeros_like(b)
    passive = torch.zeros(c, k, dtype=torch.bool, device=b.device)
    active = torch.ones(c, dtype=torch.bool, device=b.device)  # nodes still iterating
    rows = torch.arange(c, device=b.device)
    # first step: every node enters the coordinate of largest gradient (= b at theta = 0)
    grad = b.clone()
    enter = grad.argmax(dim=1)
    has = grad[rows, enter] > kkt_tol * scale
    passive[rows[has], enter[has]] = True
    active &= has
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        idx = active.nonzero().squeeze(1)
        Ka, ba, ta, pa = K[idx], b[idx], theta[idx], passive[idx]
        s = _masked_solve(Ka, ba, pa)
        feasible = ((s > 0) | ~pa).all(dim=1)
        # infeasible nodes: move from t towards s until the first passive coordinate hits 0
        neg = pa & (s <= 0)
        ratio = torch.where(neg, ta / (ta - s).clamp_min(1e-300), torch.full_like(ta, float("inf")))
        alpha = ratio.amin(dim=1).clamp(0.0, 1.0)
        alpha = torch.where(feasible, torch.ones_like(alpha), alpha)
        new_t = ta + alpha[:, None] * (s - ta)
        first = torch.zeros_like(pa)
        first[torch.arange(idx.shape[0], device=b.device), ratio.argmin(dim=1)] = True  # the blocking coordinate
        drop = pa & ((new_t <= 1e-15 * scale[idx, None]) | first) & ~feasible[:, None]
        new_t = torch.where(drop | ~pa, torch.zeros_like(new_t), new_t)
        pa = pa & ~drop
        # feasible nodes: KKT check, then add the coordinate with the largest positive gradient
        g = ba - torch.einsum("cij,cj->ci", Ka, new_t)
        g_out = torch.where(pa, torch.full_like(g, float("-inf")), g)
        best = g_out.argmax(dim=1)
        r = torch.arange(idx.shape[0], device=b.device)
        grows = feasible & (g_out[r, best] > kkt_tol * scale[idx])
        pa[r[grows], best[grows]] = True
        done = feasible & ~grows
        theta[idx] = new_t
        passive[idx] = pa
        active[idx[done]] = False
    converged = ~active
    if not bool(converged.all()):
        warnings.warn(
            f"NNK exact solver: {int((~converged).sum())} of {c} nodes did not meet the KKT conditions after "
            f"{max_iter} iterations; their current feasible weights are used",
            RuntimeWarning,
            stacklevel=3,
        )
    return theta, converged


def solve_nnk_approx(K: Tensor, b: Tensor, steps: int = 100) -> Tensor:
    """Projected gradient ``t <- max(t + eta (b - K t), 0)`` from ``t = 0``, ``eta = 1/lambda_max(K)`` per node.

    Args:
        K: (c, k, k) PSD; b: (c, k). Returns (c, k) approximate weights (error decreases with ``steps``).
    """
    if steps < 1:
        raise ValueError(f"approx_steps must be >= 1, got {steps}")
    lam = torch.linalg.eigvalsh(K)[:, -1].clamp_min(1e-12)
    eta = (1.0 / lam)[:, None]
    theta = torch.zeros_like(b)
    for _ in range(steps):
        theta = (theta + eta * (b - torch.einsum("cij,cj->ci", K, theta))).clamp_min(0.0)
    return theta


# --------------------------------------------------------------------------------------- kernels
def _prepare_points(x: Tensor, kernel: str) -> Tensor:
    return F.normalize(x, dim=1, eps=1e-12) if kernel in ("cosine", "cosine_shifted") else x


def _kernel_blocks(points: Tensor, centres: Tensor, cand: Tensor, kernel: str, sigma: float | None):
    """K_SS (c, k, k), K_Si (c, k), K_ii (c,) in float64 for a block of centres with candidates ``cand`` (c, k)."""
    xs = points[cand].double()  # (c, k, d)
    xi = points[centres].double()  # (c, d)
    gram = xs @ xs.transpose(1, 2)
    cross = torch.einsum("ckd,cd->ck", xs, xi)
    self_ = (xi * xi).sum(1)
    if kernel == "cosine":
        return gram, cross, self_
    if kernel == "cosine_shifted":
        return 0.5 + 0.5 * gram, 0.5 + 0.5 * cross, 0.5 + 0.5 * self_
    sq = gram.diagonal(dim1=1, dim2=2)
    d_ss = (sq[:, :, None] + sq[:, None, :] - 2 * gram).clamp_min(0.0)
    d_si = (sq + self_[:, None] - 2 * cross).clamp_min(0.0)
    two_s2 = 2.0 * sigma**2
    return torch.exp(-d_ss / two_s2), torch.exp(-d_si / two_s2), torch.ones_like(self_)


def _rbf_sigma(x: Tensor, neighbors: Tensor) -> float:
    """Authors' bandwidth rule (as :func:`geomlat.graphs.estimate_sigma`): mean distance to the k-th neighbour / 3."""
    kth = (x - x[neighbors[:, -1]]).double().norm(dim=1)
    sigma = float(kth.mean()) / 3.0
    return sigma if sigma > 0 else 1.0


def _check_tol(tol: float) -> None:
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if tol >= 1:
        raise ValueError(
            f"tol={tol} >= 1 turns NNK into k-NN (it only prunes weights below tol); use a small tolerance such as 1e-10"
        )


def nnk_weights(
    x: Tensor,
    k: int,
    kernel: str = "cosine",
    sigma: float | None = None,
    tol: float = 1e-10,
    solver: str = "exact",
    knn_backend: str = "dense",
    chunk_size: int | None = None,
    approx_steps: int = 100,
    node_chunk: int | None = None,
    neighbors: Tensor | None = None,
) -> NNKResult:
    """Directed NNK weights of every node (before any symmetrization).

    Args:
        x: (N, ...) points, flattened to (N, d).
        k: size of the initial k-NN set, ``1 <= k < N``.
        kernel: ``"cosine"`` (<u_i, u_j> of unit vectors; PSD for any sign), ``"cosine_shifted"``
            (0.5 + 0.5 cos, the authors' NNK code) or ``"rbf"`` ``exp(-|x_i - x_j|^2 / (2 sigma^2))``.
        sigma: RBF bandwidth; None: mean distance to the k-th neighbour / 3.
        tol: weights below ``tol`` become 0; must be in [0, 1).
        solver: ``"exact"`` or ``"approx"`` (see module docstring).
        knn_backend, chunk_size: passed to :func:`geomlat.knn` (cosine metric for the cosine kernels,
            euclidean for RBF).
        approx_steps: projected-gradient iterations of the approximate solver.
        node_chunk: nodes per solve block (default: blocks of about :data:`SOLVE_BYTES`).
        neighbors: optional precomputed (N, k) candidate indices (self excluded).

    Returns:
        :class:`NNKResult`.
    """
    check_choice(kernel, "kernel", NNK_KERNELS)
    check_choice(solver, "solver", SOLVERS)
    check_choice(knn_backend, "knn_backend", BACKENDS)
    _check_tol(tol)
    flat = check_features(x)
    n, d = flat.shape
    check_k(k, n)
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    with torch.no_grad():
        if neighbors is None:
            metric = "euclidean" if kernel == "rbf" else "cosine"
            neighbors = knn(flat, k, metric=metric, backend=knn_backend, chunk_size=chunk_size)
        elif neighbors.shape != (n, k):
            raise ValueError(f"neighbors must have shape ({n}, {k}), got {tuple(neighbors.shape)}")
        if kernel == "rbf" and sigma is None:
            sigma = _rbf_sigma(flat, neighbors)
        points = _prepare_points(flat, kernel)
        step = node_chunk or max(1, min(n, SOLVE_BYTES // max(1, k * (d + k) * 8)))
        weights = torch.empty(n, k, dtype=torch.float64, device=flat.device)
        residual = torch.empty(n, dtype=torch.float64, device=flat.device)
        for start in range(0, n, step):
            centres = torch.arange(start, min(n, start + step), device=flat.device)
            K, b, kii = _kernel_blocks(points, centres, neighbors[centres], kernel, sigma)
            if solver == "exact":
                theta, _ = solve_nnk_exact(K, b)
            else:
                theta = solve_nnk_approx(K, b, approx_steps)
            theta = torch.where(theta < tol, torch.zeros_like(theta), theta)
            quad = torch.einsum("ci,cij,cj->c", theta, K, theta)
            residual[centres] = (kii - 2 * (theta * b).sum(1) + quad).clamp_min(0.0)
            weights[centres] = theta
    return NNKResult(neighbors, weights.to(flat.dtype), residual, kernel, sigma if kernel == "rbf" else None)


def _symmetrize(result: NNKResult, n: int, edge_rule: str) -> Data:
    rows = torch.arange(n, device=result.neighbors.device).repeat_interleave(result.neighbors.shape[1])
    cols = result.neighbors.reshape(-1)
    w = result.weights.reshape(-1)
    if edge_rule == "reference":
        # keep theta_ij only for reciprocal candidates (i in S_j) with e_i < e_j (authors' code)
        # membership test of (j, i) among the candidate pairs, on sorted linear keys i * n + j
        keys = torch.sort(rows * n + cols).values
        query = cols * n + rows
        pos = torch.searchsorted(keys, query).clamp_max(keys.numel() - 1)
        reciprocal = keys[pos] == query
        keep = reciprocal & (result.residual[rows] < result.residual[cols])
        w = torch.where(keep, w, torch.zeros_like(w))
    nz = w > 0
    index = torch.stack([torch.cat([rows[nz], cols[nz]]), torch.cat([cols[nz], rows[nz]])])
    values = torch.cat([w[nz], w[nz]])
    # max-symmetrization: coalesce with "max" (both directions present, duplicates reduced by max)
    key = index[0] * n + index[1]
    uniq, inverse = torch.unique(key, return_inverse=True)
    merged = torch.zeros(uniq.numel(), dtype=values.dtype, device=values.device).scatter_reduce(
        0, inverse, values, reduce="amax", include_self=False
    )
    edge_index = torch.stack([uniq // n, uniq % n])
    return Data(edge_index=edge_index, edge_weight=merged, num_nodes=n)


def nnk_graph(
    x: Tensor,
    k: int,
    kernel: str = "cosine",
    sigma: float | None = None,
    tol: float = 1e-10,
    solver: str = "exact",
    edge_rule: str = "max",
    knn_backend: str = "dense",
    chunk_size: int | None = None,
    approx_steps: int = 100,
    node_chunk: int | None = None,
) -> Data:
    """Symmetric NNK graph of a set of points (Shekkizhar & Ortega 2020).

    Args: see :func:`nnk_weights`; ``edge_rule`` is ``"max"`` (default, ``max(Theta, Theta^T)``) or
        ``"reference"`` (reciprocal candidates only, keep the direction with smaller residual, then max).

    Returns:
        ``Data(edge_index (2, E), edge_weight (E,), num_nodes=N, residual (N,))``, both directions of every
        edge stored, sorted by (source, target), no self-loops.

    Example:
        >>> g = nnk_graph(torch.rand(100, 8), k=10)
        >>> bool((g.edge_index[0] != g.edge_index[1]).all())
        True
    """
    check_choice(edge_rule, "edge_rule", EDGE_RULES)
    result = nnk_weights(x, k, kernel, sigma, tol, solver, knn_backend, chunk_size, approx_steps, node_chunk)
    data = _symmetrize(result, result.neighbors.shape[0], edge_rule)
    data.residual = result.residual
    return data


def nnk_interpolation(x: Tensor, labels: Tensor, k: int, **nnk_options) -> tuple[Tensor, float]:
    """Leave-one-out NNK label interpolation (Shekkizhar & Ortega, Asilomar 2021; ``papers/004``).

    ``y_hat_i = sum_j theta_ij y_j / sum_j theta_ij`` over i's own NNK neighbours (i is never its own
    candidate, so this is leave-one-out). A node whose weights are all 0 takes the label of its nearest
    neighbour.

    Args:
        x: (N, ...) features; labels: (N,) integer classes; ``nnk_options``: see :func:`nnk_weights`.

    Returns:
        ``(predictions (N, C) soft labels (rows sum to 1), classification error in [0, 1])``; the predicted
        class is the argmax (ties: smallest class index).
    """
    flat = check_features(x)
    y = check_labels(labels, flat.shape[0]).to(flat.device)
    result = nnk_weights(flat, k, **nnk_options)
    num_classes = int(y.max()) + 1
    onehot = F.one_hot(y, num_classes).double()
    w = result.weights.double()
    total = w.sum(1, keepdim=True)
    empty = total[:, 0] <= 0
    w = torch.where(empty[:, None], F.one_hot(torch.zeros_like(y), k).double(), w)  # nearest neighbour
    pred = torch.einsum("nk,nkc->nc", w, onehot[result.neighbors]) / w.sum(1, keepdim=True)
    error = float((pred.argmax(1) != y).double().mean())
    return pred.to(flat.dtype), error


def nnk_layer_errors(features: dict[str, Tensor], labels: Tensor, k: int, **nnk_options) -> dict[str, float]:
    """Leave-one-out NNK interpolation error of every layer ``{name: (N, ...) features}`` -> ``{name: error}``."""
    if not features:
        raise ValueError("features is empty: pass a dict {layer name: (N, ...) tensor}")
    return {name: nnk_interpolation(feat, labels, k, **nnk_options)[1] for name, feat in features.items()}
