"""Non-negative kernel regression (NNK) graphs (Shekkizhar & Ortega, ICASSP 2020; ``papers/004``).

For every node i with k-NN set S (from :func:`geomlat.knn`) and kernel matrix K, NNK solves the
non-negative kernel regression

    theta_i = argmin_{theta >= 0}  1/2 theta^T K_SS theta - K_Si^T theta

and keeps as neighbors of i the points of S with ``theta > tol``: a neighbor is dropped when it is
geometrically redundant given a closer one, so the neighborhood is a polytope shaped by the local
geometry rather than by density. The residual is ``e_i = K_ii - 2 theta^T K_Si + theta^T K_SS theta``.

Solvers (both batched over nodes, no Python loop per node):

- ``"exact"``: batched principal pivoting on the KKT conditions (linear complementarity problem
  ``w = K theta - b >= 0, theta >= 0, theta^T w = 0``), see :func:`_principal_pivoting`: every node starts
  from an empty support and, at each iteration, moves its most violated coordinate (negative weight or
  negative gradient) in or out of the support with one rank-1 update of a symmetric (k+1, k+1) tableau, so
  a node needs about one pivot per NNK neighbor and no factorization. The KKT conditions are then checked
  on K and b (``theta >= 0``, gradient ``b - K theta <= kkt_tol`` off the support, ``= 0`` on it); the rare
  nodes that fail (near-duplicate points) are solved again with a batched Lawson-Hanson active-set method.
  The result is the exact optimum (float64), unlike the authors' node-by-node pruning heuristic.
- ``"approx"``: projected gradient ``theta <- max(theta + eta (b - K theta), 0)``, ``eta = 1/lambda_max(K_SS)``
  (the authors' ISTA-style batched solver), ``approx_steps`` iterations from ``theta = 0``.

Edge rules (both return a symmetric graph):

- ``"max"`` (default): ``W = max(Theta, Theta^T)``: every solved weight is kept.
- ``"reference"``: the authors' code: keep ``theta_ij`` only where j is in S_i, i is in S_j and
  ``e_i < e_j`` (strictly; so non-reciprocal k-NN pairs and exact residual ties disappear), then
  ``max(W, W^T)``. It is sparser but can isolate vertices, which is why it is not the default.

Conventions (``convention=`` of :func:`nnk_weights`, :func:`nnk_loo_predictions`, :func:`nnk_interpolation`,
:func:`nnk_layer_errors` and :func:`geomlat.analysis.channelwise_loo_errors`):

- ``"default"``: candidates are the k nearest by the kernel's ``knn_metric`` (cosine for the cosine kernels),
  self excluded; default kernel ``"cosine"``; one bandwidth for all nodes (:func:`rbf_sigma`).
- ``"deepnnk"``: the authors' leave-one-out code (STAC-USC ``DeepNNK_polytope_interpolation``,
  ``CW-DeepNNK_Early_Stopping``, ``utils/graph_utils.py::nnk_loo``): candidates are the k nearest by L2
  distance on the raw features (their faiss ``IndexFlatL2``; here geomlat's exact :func:`geomlat.knn`), the
  query and every candidate at distance 0 (exact duplicates of the query) dropped (their weight is 0 and
  ``NNKResult.valid`` is False); default kernel ``"cosine_shifted"`` (0.5 + 0.5 cos); with the RBF kernel
  and ``sigma=None`` a bandwidth per query, the distance to its farthest kept candidate / 3. The weights
  are solved by geomlat's exact solver (not the authors' iterative pruning heuristic, whose Cholesky
  factorization fails when k > d + 1 and the kernel matrix is singular: geomlat's exact solver has no such
  limit), normalized to sum 1 and the prediction is the argmax of the weighted labels, as theirs. Where
  their code is undefined, geomlat does: a query whose candidates are all duplicates keeps them (as theirs;
  with the RBF kernel its bandwidth is then 1, theirs 0 / 0); a zero vector has cosine 0 with every point
  (their normalization divides by 0 and the NaN prediction becomes class 0); a query whose weights are all
  0 takes the label of its nearest kept candidate (theirs: 0 / 0, class 0). Distances are exact float64
  (faiss computes float32 ``|x|^2 + |y|^2 - 2 x.y`` for batches of queries, so their "distance 0" can miss
  a duplicate or catch a near-duplicate).

Memory: the k-NN search uses ``knn_backend``/``chunk_size``; the solve runs over blocks of nodes whose
(block, k+1, k+1) kernel matrices and tableaux stay under :data:`SOLVE_BYTES`, so tens of thousands of points fit.
Weights are computed without autograd (``torch.no_grad``) in float64 and returned in ``x``'s dtype.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from ._checks import check_choice, check_features, check_k, check_labels, full_precision
from .kernels import Kernel, get_kernel
from .knn import BACKENDS, knn
from .options import Options, option_set

SOLVERS = ("exact", "approx")
EDGE_RULES = ("max", "reference")
#: NNK leave-one-out conventions (module docstring): geomlat's own and the authors' DeepNNK code.
CONVENTIONS = ("default", "deepnnk")
#: Default kernel of each convention.
DEFAULT_KERNELS = {"default": "cosine", "deepnnk": "cosine_shifted"}

#: Bytes of the three (block, k+1, k+1) float64 arrays of a solve block (kernel matrices, two tableau buffers).
# 24 MiB is about 1,100 nodes at k = 30: large enough that the fixed cost of a pivoting iteration (about 20 small
# torch calls) is spread over many nodes, small enough to stay cache-friendly and to reuse its memory (fresh
# pages cost as much as the arithmetic); 24 to 48 MiB run within the noise on a 2-core CPU (N = 5,000, d = 64,
# k = 30), 80 MiB (one block) ~50% slower.
SOLVE_BYTES = 24 * 2**20

#: Nodes per batched Gram product of the kernel computation (small batched GEMMs whose operands stay in cache).
GRAM_CHUNK = 256


@dataclass
class NNKResult:
    """Directed NNK solution of every node.

    Attributes:
        neighbors: (N, k) long, the k-NN candidates of each node (nearest first).
        weights: (N, k) NNK weights theta (0 where pruned), dtype of the input.
        residual: (N,) ``e_i``, float64.
        kernel: the name of the kernel used; ``sigma``: its bandwidth (None for kernels without one, e.g. cosine;
            an (N,) float64 tensor of per-query bandwidths with ``convention="deepnnk"`` and the RBF kernel).
        valid: (N, k) bool, the candidates kept (``convention="deepnnk"`` drops exact duplicates of the query);
            None: all of them.
        convention: ``"default"`` or ``"deepnnk"`` (module docstring).
    """

    neighbors: Tensor
    weights: Tensor
    residual: Tensor
    kernel: str
    sigma: float | Tensor | None = None
    valid: Tensor | None = None
    convention: str = "default"

    @property
    def mask(self) -> Tensor:
        """(N, k) bool: which candidates are NNK neighbors (theta > 0)."""
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


def _principal_pivoting(
    S: Tensor, threshold: Tensor, max_pivots: int, spare: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Simple principal pivoting (Murty 1988, ch. 4; most-violated rule) for ``min_{t >= 0} 1/2 t^T K t - b^T t``,
    batched over nodes, one pivot per node per iteration, on a symmetric tableau updated in place.

    The optimality conditions are the linear complementarity problem ``w = K t - b >= 0, t >= 0, t^T w = 0``.
    For a free set F (``t = 0`` off F) the basic variables are ``t_F = K_FF^-1 b_F`` and ``w_j`` for j not in
    F. ``S`` starts as the augmented matrix ``[[K, -b], [-b^T, *]]`` (c, k+1, k+1); after pivoting on F it
    holds the principal pivot transform of that matrix with the columns of F negated, which keeps it
    symmetric, so that one pivot on j (j enters F: ``s = 1``, ``S_jj > 0``; j leaves: ``s = -1``, ``S_jj < 0``)
    is the rank-1 update

        r = S[j] + s e_j;   S <- S - r r^T / S_jj;   S_jj <- S_jj + 2 s

    and the last row always holds the basic variables ``q = S[k, :k]`` (t_j on F, w_j off F). A node pivots
    on ``argmin q`` while ``min q < -threshold`` (a negative weight leaves F, a negative gradient enters),
    so from F = {} it needs about one pivot per NNK neighbor, k^2 work each and no factorization;
    ``q >= -threshold`` is the KKT optimum. (Murty's least-index rule provably terminates for positive
    definite K; the most-violated rule needs far fewer pivots in practice, 13 instead of 31 per node at
    N = 5,000, d = 64, k = 30, and the pivot limit covers the rare cycling.) A node stops, unconverged, when
    its pivot ``s S_jj`` is not clearly positive (K_FF numerically singular: duplicate points). Stopped
    nodes stay in the tableau unchanged (zero update) until a quarter of the rows have stopped; then they
    are stored and dropped.

    Args:
        S: (c, k+1, k+1) float64 augmented matrix, overwritten.
        threshold: (c,) tolerance on q; max_pivots: pivots per node.
        spare: optional buffer of S's shape (not S's memory) that receives the rows kept when dropping rows.

    Returns:
        ``(theta (c, k) >= 0, converged (c,) bool)``; unconverged rows hold their last iterate.
    """
    c, k = S.shape[0], S.shape[1] - 1
    theta = S.new_zeros(c, k)
    converged = torch.zeros(c, dtype=torch.bool, device=S.device)
    if c == 0:
        return theta, converged
    tiny = 1e-12 * float(S.diagonal(dim1=1, dim2=2)[:, :k].abs().max().clamp_min(1.0))
    sign = S.new_ones(c, k)  # s_j: +1 off F, -1 on F
    idx = torch.arange(c, device=S.device)  # node of each tableau row
    base = idx * (k + 1)  # flat index of each tableau's first row
    low = -threshold

    def record(rows: Tensor, S: Tensor, sign: Tensor, idx: Tensor, vals: Tensor, low: Tensor) -> None:
        q, out = S[rows, k, :k], idx[rows]
        theta[out] = torch.where(sign[rows] < 0, q, torch.zeros_like(q)).clamp_min(0.0)
        converged[out] = vals[rows] >= low[rows]

    for it in range(max_pivots + 1):
        vals, j = S[:, k, :k].min(1)  # most negative basic variable and its index, (n,)
        row = S.view(-1, k + 1).index_select(0, base + j)  # S[j], (n, k+1)
        j = j[:, None]
        pivot = row.gather(1, j)  # S_jj, (n, 1)
        s = sign.gather(1, j)
        act = (vals < low) & (pivot * s > tiny)[:, 0]
        n_act = int(act.sum())
        if n_act == 0 or it == max_pivots:
            break
        if 4 * n_act <= 3 * S.shape[0]:  # a quarter of the rows have stopped: store and drop them
            record((~act).nonzero()[:, 0], S, sign, idx, vals, low)
            keep = act.nonzero()[:, 0]
            if spare is None:
                S = S.index_select(0, keep)
            else:  # into the other buffer: no fresh memory (page faults cost as much as the copy)
                S, spare = torch.index_select(S, 0, keep, out=spare[:n_act]), S
            sign, idx, low, row, pivot, j, s = (a.index_select(0, keep) for a in (sign, idx, low, row, pivot, j, s))
            base = base[:n_act]
            act = act.new_ones(n_act)
        on = act.to(S.dtype)[:, None]  # 1 where a pivot happens, 0 for stopped rows (zero update)
        flip = 2.0 * on * s
        row.scatter_add_(1, j, s)  # r = S[j] + s e_j
        S.addcmul_((row * (on / pivot))[:, :, None], row[:, None, :], value=-1.0)
        S.view(S.shape[0], -1).scatter_add_(1, j * (k + 2), flip)  # S_jj += 2 s
        sign.scatter_(1, j, s - flip)  # s_j <- -s_j
    record(torch.arange(S.shape[0], device=S.device), S, sign, idx, vals, low)
    return theta, converged


def _solve_augmented(G: Tensor, kkt_tol: float, max_iter: int, work: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Exact solve from the augmented matrix ``G = [[K, -b], [-b^T, *]]`` (c, k+1, k+1), left unchanged
    (``work``: optional (2, c, k+1, k+1) buffer for the pivoting tableau).

    Principal pivoting on a copy of G, then the KKT conditions are checked on the original K and b:
    ``theta >= 0``, ``y = K theta - b >= -tol`` and ``|y_j| <= tol`` where ``theta_j > 0``
    (``tol = kkt_tol * max(1, max|b|)``). The nodes that fail (singular K_FF, pivot limit, rounding) are
    solved again with the Lawson-Hanson method.

    Returns ``(theta (c, k), y (c, k) = K theta - b, converged (c,) bool)``.
    """
    k = G.shape[1] - 1
    scale = G[:, :k, k].abs().amax(dim=1).clamp_min(1.0)
    threshold = kkt_tol * scale
    if work is None:
        theta, ok = _principal_pivoting(G.clone(), threshold, max_iter)
    else:
        theta, ok = _principal_pivoting(work[0].copy_(G), threshold, max_iter, spare=work[1])
    y = torch.bmm(G[:, :k], torch.cat([theta, theta.new_ones(theta.shape[0], 1)], 1)[:, :, None])[..., 0]  # K theta - b
    ok &= (y >= -threshold[:, None]).all(1) & ((theta == 0) | (y.abs() <= threshold[:, None])).all(1)
    if not bool(ok.all()):
        rest = (~ok).nonzero().squeeze(1)
        K, b = G[rest, :k, :k], -G[rest, :k, k]
        theta[rest], ok[rest] = _solve_lawson_hanson(K, b, kkt_tol, max_iter)
        y[rest] = torch.einsum("cij,cj->ci", K, theta[rest]) - b
    return theta, y, ok


def solve_nnk_exact(K: Tensor, b: Tensor, kkt_tol: float = 1e-10, max_iter: int | None = None) -> tuple[Tensor, Tensor]:
    """Exact batched non-negative QP ``min_{t >= 0} 1/2 t^T K t - b^T t``.

    Principal pivoting (:func:`_principal_pivoting`, about one rank-1 update per NNK neighbor and node);
    the result is checked against the KKT conditions on K and b, and the rare nodes that fail go through
    the Lawson-Hanson active-set method (:func:`_solve_lawson_hanson`). Both stop only at the KKT
    conditions, so the result is the optimum up to rounding.

    Args:
        K: (c, k, k) symmetric positive semi-definite (float64 recommended).
        b: (c, k).
        kkt_tol: a zero coordinate may enter the support only if its gradient ``(b - K t)_j`` exceeds
            ``kkt_tol * max(1, max|b|)``.
        max_iter: pivots per node, and Lawson-Hanson iterations (default ``5 k + 10``); nodes not converged
            by then keep their current feasible iterate and a ``RuntimeWarning`` is issued.

    Returns:
        ``(theta (c, k) >= 0, converged (c,) bool)``.
    """
    c, k = b.shape
    G = K.new_zeros(c, k + 1, k + 1)
    G[:, :k, :k] = K
    G[:, :k, k] = -b
    G[:, k, :k] = -b
    theta, _, converged = _solve_augmented(G, kkt_tol, 5 * k + 10 if max_iter is None else max_iter)
    return theta, converged


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
def augmented_kernel(
    points: Tensor, centers: Tensor, cand: Tensor, kernel: str | Kernel, sigma: float | None, out: Tensor | None = None
) -> Tensor:
    """``[[K_SS, -K_Si], [-K_Si^T, K_ii]]`` (c, k+1, k+1) float64 for centers (c,) with candidates ``cand`` (c, k).

    Batched Gram matrices of the gathered ``[x_S; x_i]`` (k+1, d), :data:`GRAM_CHUNK` nodes at a time, turned
    into kernel values in place by the kernel's ``from_gram_`` (:mod:`geomlat.kernels`), then the last row and
    column negated. This is the augmented matrix that :func:`solve_nnk_exact` builds from ``K`` and ``b``.

    Args:
        points: (N, d) float64 points already prepared by the kernel (``get_kernel(kernel).prepare(x)``:
            unit rows for the cosine kernels).
        centers: (c,) long node indices; cand: (c, k) long candidate indices of each center.
        kernel: a registered kernel name or :class:`geomlat.kernels.Kernel`; sigma: its bandwidth, if any.
        out: optional (c, k+1, k+1) buffer to fill.
    """
    kern = get_kernel(kernel) if isinstance(kernel, str) else kernel
    c, k = cand.shape
    index = torch.cat([cand, centers[:, None]], 1)  # (c, k+1): candidates, then the center
    G = points.new_empty(c, k + 1, k + 1) if out is None else out
    buf = points.new_empty(min(c, GRAM_CHUNK) * (k + 1), points.shape[1])
    for start in range(0, c, GRAM_CHUNK):
        rows = index[start : start + GRAM_CHUNK]
        xs = torch.index_select(points, 0, rows.reshape(-1), out=buf[: rows.numel()]).view(rows.shape[0], k + 1, -1)
        torch.bmm(xs, xs.transpose(1, 2), out=G[start : start + GRAM_CHUNK])
    result = kern.from_gram_(G, sigma)
    if result is not G:
        raise TypeError(f"kernel {kern.name!r}: from_gram_ must write into its argument and return it")
    G[:, -1].neg_()
    G[:, :, -1].neg_()
    return G


def kernel_blocks(points: Tensor, centers: Tensor, cand: Tensor, kernel: str | Kernel, sigma: float | None):
    """``(K_SS (c, k, k), K_Si (c, k), K_ii (c,))`` float64 for centers (c,) with candidates ``cand`` (c, k);
    arguments as :func:`augmented_kernel` (``points`` prepared by the kernel)."""
    G = augmented_kernel(points, centers, cand, kernel, sigma)
    k = cand.shape[1]
    return G[:, :k, :k], -G[:, :k, k], G[:, k, k]


def solve_block_size(n: int, k: int) -> int:
    """Nodes per solve block: three (block, k+1, k+1) float64 arrays within :data:`SOLVE_BYTES`, blocks of equal
    size (a small last block would cost as many pivoting iterations as a full one)."""
    step = max(1, min(n, SOLVE_BYTES // (3 * (k + 1) ** 2 * 8)))
    return -(-n // -(-n // step))


def rbf_sigma(x: Tensor, neighbors: Tensor, kernel: str | Kernel = "rbf") -> float:
    """Bandwidth that :func:`nnk_weights` uses when ``sigma`` is None: the kernel's ``bandwidth`` rule on the
    distances to the k-th neighbor (RBF: their mean / 3, as :func:`geomlat.kernels.estimate_sigma`).

    Args:
        x: (N, d) points (prepared by the kernel); neighbors: (N, k) candidate indices, nearest first (as from
            :func:`geomlat.knn`).

    Returns:
        sigma > 0 (1.0 when every k-th neighbor is at distance 0).
    """
    kern = get_kernel(kernel) if isinstance(kernel, str) else kernel
    return float(kern.bandwidth((x - x[neighbors[:, -1]]).double().norm(dim=1)))


def _check_tol(tol: float) -> None:
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if tol >= 1:
        raise ValueError(
            f"tol={tol} >= 1 turns NNK into k-NN (it only prunes weights below tol); use a small tolerance such as 1e-10"
        )


def check_convention(convention: str) -> str:
    """``convention`` if it is one of :data:`CONVENTIONS`, else ``ValueError`` naming them."""
    check_choice(convention, "convention", CONVENTIONS)
    return convention


def deepnnk_candidates(flat: Tensor, neighbors: Tensor) -> Tensor:
    """(N, k) bool: the candidates the authors' DeepNNK code keeps, those not at distance 0 from their query
    (exact float64 comparison of the feature vectors). A query whose candidates are all at distance 0 keeps
    them all (as their code does when nothing is left).

    Args: flat (N, d) features; neighbors (N, k) candidate indices."""
    valid = torch.stack([(flat[neighbors[:, j]] != flat).any(1) for j in range(neighbors.shape[1])], 1)
    return valid | ~valid.any(1, keepdim=True)


def deepnnk_sigma(flat: Tensor, neighbors: Tensor, valid: Tensor) -> Tensor:
    """(N,) float64 per-query bandwidth of the authors' gaussian kernel: the distance from each query to its
    farthest kept candidate (their k-th after the duplicates are dropped) / 3; 1 where it is 0 (all
    candidates are duplicates: every kernel value is then 1 whatever the bandwidth; their code divides 0 by 0)."""
    x = flat.double()
    dist = torch.stack([(x[neighbors[:, j]] - x).norm(dim=1) for j in range(neighbors.shape[1])], 1)
    far = torch.where(valid, dist, torch.zeros_like(dist)).amax(1) / 3
    return torch.where(far > 0, far, torch.ones_like(far))


def _drop_invalid_(G: Tensor, valid: Tensor) -> Tensor:
    """Zero the rows/columns of the dropped candidates in an augmented matrix (c, k+1, k+1) and put 1 on their
    diagonal: their ``b_j`` is 0 and they never enter the support (theta_j = 0)."""
    k = valid.shape[1]
    keep = torch.cat([valid, valid.new_ones(valid.shape[0], 1)], 1).to(G.dtype)
    G.mul_(keep[:, :, None] * keep[:, None, :])
    G[:, :k, :k].diagonal(dim1=1, dim2=2).add_(1.0 - keep[:, :k])
    return G


@option_set
class NNKOptions(Options):
    """The options of an NNK solve (:func:`nnk_weights`, :func:`nnk_graph`,
    :func:`geomlat.analysis.channelwise_nnk`, the ``**nnk_options`` of :func:`nnk_interpolation`), validated
    once. Fields documented in :func:`nnk_weights`; precomputed ``neighbors`` belong to a point set and are
    given per call.

    Example:
        >>> x = torch.rand(50, 4)
        >>> opts = NNKOptions(k=5, solver="approx")
        >>> bool((opts.weights(x).weights == nnk_weights(x, 5, solver="approx").weights).all())
        True
    """

    k: int
    kernel: str | None = None
    sigma: float | None = None
    tol: float = 1e-10
    solver: str = "exact"
    knn_backend: str = "dense"
    chunk_size: int | None = None
    approx_steps: int = 100
    node_chunk: int | None = None
    convention: str = "default"

    def __post_init__(self):
        from .graphs import check_kernel

        check_k(self.k, self.k + 1)  # an int >= 1; the bound k < N is checked on the points
        if self.kernel is not None:
            check_kernel(self.kernel)
        if self.sigma is not None and (isinstance(self.sigma, bool) or not self.sigma > 0):
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        _check_tol(self.tol)
        check_choice(self.solver, "solver", SOLVERS)
        check_choice(self.knn_backend, "knn_backend", BACKENDS)
        for name in ("chunk_size", "node_chunk", "approx_steps"):
            value = getattr(self, name)
            if (value is not None or name == "approx_steps") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1{'' if name == 'approx_steps' else ' or None'}, got {value!r}")
        check_convention(self.convention)

    @property
    def kernel_name(self) -> str:
        """The kernel: ``kernel``, or the convention's default (:data:`DEFAULT_KERNELS`) when it is None."""
        return DEFAULT_KERNELS[self.convention] if self.kernel is None else self.kernel

    @full_precision  # half features are upcast by check_features; no bf16 products under autocast
    def weights(self, x: Tensor, neighbors: Tensor | None = None) -> "NNKResult":
        """:func:`nnk_weights` of the points ``x`` (N, ...) with these options."""
        return _nnk_weights(x, self, neighbors)

    def graph(self, x: Tensor, edge_rule: str = "max") -> Data:
        """:func:`nnk_graph` of the points ``x`` (N, ...) with these options."""
        check_choice(edge_rule, "edge_rule", EDGE_RULES)
        result = self.weights(x)
        data = _symmetrize(result, result.neighbors.shape[0], edge_rule)
        data.residual = result.residual
        return data


def nnk_options_of(k: int, nnk_kwargs: dict) -> tuple[NNKOptions, Tensor | None]:
    """``(NNKOptions(k=k, **options), neighbors)`` of the ``**nnk_options`` of a function that passes them on
    (``neighbors``, optional, is taken out); an unknown name is a ``TypeError`` listing the valid ones."""
    kwargs = dict(nnk_kwargs)
    neighbors = kwargs.pop("neighbors", None)
    return NNKOptions(k=k, **kwargs), neighbors


def nnk_weights(
    x: Tensor,
    k: int,
    kernel: str | None = None,
    sigma: float | None = None,
    tol: float = 1e-10,
    solver: str = "exact",
    knn_backend: str = "dense",
    chunk_size: int | None = None,
    approx_steps: int = 100,
    node_chunk: int | None = None,
    neighbors: Tensor | None = None,
    convention: str = "default",
) -> NNKResult:
    """Directed NNK weights of every node (before any symmetrization).

    Args:
        x: (N, ...) points, flattened to (N, d).
        k: size of the initial k-NN set, ``1 <= k < N``.
        kernel: ``"auto"`` (geomlat's default-kernel rule, :func:`geomlat.graphs.resolve_kernel`: cosine for
            non-negative data, RBF for signed data), ``"cosine"`` (<u_i, u_j> of unit vectors; PSD for any sign), ``"cosine_shifted"``
            (0.5 + 0.5 cos, the authors' NNK code), ``"rbf"`` ``exp(-|x_i - x_j|^2 / (2 sigma^2))``, or any
            kernel registered with :func:`geomlat.kernels.register_kernel` (it must be positive semi-definite).
            None: the convention's default (:data:`DEFAULT_KERNELS`: ``"cosine"``, or ``"cosine_shifted"``
            for ``"deepnnk"``).
        sigma: bandwidth of a kernel that has one; None: the kernel's rule (RBF: mean distance to the k-th
            neighbor / 3, :func:`rbf_sigma`; with ``convention="deepnnk"`` one bandwidth per query,
            :func:`deepnnk_sigma`, handed to the kernel's ``from_gram_`` as a (c, 1, 1) tensor).
        tol: weights below ``tol`` become 0; must be in [0, 1).
        solver: ``"exact"`` or ``"approx"`` (see module docstring).
        knn_backend, chunk_size: passed to :func:`geomlat.knn` with the kernel's ``knn_metric`` (cosine for
            the cosine kernels, euclidean for RBF; always euclidean with ``convention="deepnnk"``).
        approx_steps: projected-gradient iterations of the approximate solver.
        node_chunk: nodes per solve block (default: blocks of about :data:`SOLVE_BYTES`).
        neighbors: optional precomputed (N, k) candidate indices (self excluded).
        convention: ``"default"`` or ``"deepnnk"`` (the authors' LOO code: L2 candidates without the exact
            duplicates of the query, shifted cosine; module docstring). The weights are geomlat's exact
            solution either way, not the authors' pruning heuristic.

    Returns:
        :class:`NNKResult` (with ``convention="deepnnk"``, ``neighbors`` are the authors' candidates and
        ``valid`` says which were kept).
    """
    return NNKOptions.pick(locals()).weights(x, neighbors)


def _nnk_weights(x: Tensor, options: NNKOptions, neighbors: Tensor | None) -> NNKResult:
    """:func:`nnk_weights` of the points ``x`` with validated options."""
    kernel, convention, sigma = options.kernel_name, options.convention, options.sigma
    k = options.k
    flat = check_features(x)
    if kernel == "auto":
        from .graphs import resolve_kernel

        kernel = resolve_kernel(flat, kernel)
    kern = get_kernel(kernel)
    n = flat.shape[0]
    check_k(k, n)
    deep = convention == "deepnnk"
    with torch.no_grad():
        if neighbors is None:
            metric = "euclidean" if deep else kern.knn_metric
            neighbors = knn(flat, k, metric=metric, backend=options.knn_backend, chunk_size=options.chunk_size)
        elif neighbors.shape != (n, k):
            raise ValueError(f"neighbors must have shape ({n}, {k}), got {tuple(neighbors.shape)}")
        valid = deepnnk_candidates(flat, neighbors) if deep else None
        prepared = kern.prepare(flat)
        if kern.uses_sigma and sigma is None:
            sigma = deepnnk_sigma(flat, neighbors, valid) if deep else rbf_sigma(prepared, neighbors, kern)
        weights, residual = _solve_nodes(prepared.double(), neighbors, kern, sigma, options.tol, options.solver,
                                         options.approx_steps, options.node_chunk, valid)
    return NNKResult(neighbors, weights.to(flat.dtype), residual, kernel, sigma if kern.uses_sigma else None,
                     valid, convention)


def _solve_nodes(points: Tensor, neighbors: Tensor, kern: Kernel, sigma, tol: float, solver: str, approx_steps: int,
                 node_chunk: int | None, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """NNK weights (N, k) and residuals (N,) float64 of every node, block by block (:func:`nnk_weights`).
    ``sigma``: a float, or an (N,) tensor of per-node bandwidths; ``valid``: (N, k) kept candidates or None."""
    n, k = neighbors.shape
    step = node_chunk or solve_block_size(n, k)
    weights = torch.empty(n, k, dtype=torch.float64, device=points.device)
    residual = torch.empty(n, dtype=torch.float64, device=points.device)
    buffers = points.new_empty(3, step, k + 1, k + 1)  # kernel matrices, 2 for the tableau: reused by every block
    for start in range(0, n, step):
        centers = torch.arange(start, min(n, start + step), device=points.device)
        c = centers.shape[0]
        s = sigma[centers].to(points)[:, None, None] if isinstance(sigma, Tensor) else sigma
        G = augmented_kernel(points, centers, neighbors[centers], kern, s, out=buffers[0, :c])
        if valid is not None:
            _drop_invalid_(G, valid[centers])
        K, b = G[:, :k, :k], -G[:, :k, k]
        if solver == "exact":
            theta, y, _ = _solve_augmented(G, 1e-10, 5 * k + 10, work=buffers[1:, :c])
        else:
            theta = solve_nnk_approx(K, b, approx_steps)
            y = None
        small = (theta > 0) & (theta < tol)
        if y is None or bool(small.any()):
            theta = torch.where(small, torch.zeros_like(theta), theta)
            y = torch.einsum("cij,cj->ci", K, theta) - b
        # e_i = K_ii - 2 theta^T b + theta^T K theta = K_ii - theta^T b + theta^T y, with y = K theta - b
        residual[centers] = (G[:, k, k] - (theta * (b - y)).sum(1)).clamp_min(0.0)
        weights[centers] = theta
    return weights, residual


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


def nnk_symmetrize(result: NNKResult, edge_rule: str = "max") -> Data:
    """Symmetric graph of a directed NNK solution, as :func:`nnk_graph` builds it from :func:`nnk_weights`.

    Args:
        result: :class:`NNKResult` of N nodes (neighbors and weights (N, k)).
        edge_rule: ``"max"`` or ``"reference"`` (see the module docstring).

    Returns:
        ``Data(edge_index (2, E), edge_weight (E,), num_nodes=N)``, both directions of every edge, sorted by
        (source, target), no self-loops (``residual`` is not attached).
    """
    check_choice(edge_rule, "edge_rule", EDGE_RULES)
    return _symmetrize(result, result.neighbors.shape[0], edge_rule)


def nnk_graph(
    x: Tensor,
    k: int,
    kernel: str | None = None,
    sigma: float | None = None,
    tol: float = 1e-10,
    solver: str = "exact",
    edge_rule: str = "max",
    knn_backend: str = "dense",
    chunk_size: int | None = None,
    approx_steps: int = 100,
    node_chunk: int | None = None,
    convention: str = "default",
) -> Data:
    """Symmetric NNK graph of a set of points (Shekkizhar & Ortega 2020).

    Args: see :func:`nnk_weights` (``kernel=None``: the convention's default, cosine); ``edge_rule`` is ``"max"`` (default, ``max(Theta, Theta^T)``) or
        ``"reference"`` (reciprocal candidates only, keep the direction with smaller residual, then max).

    Returns:
        ``Data(edge_index (2, E), edge_weight (E,), num_nodes=N, residual (N,))``, both directions of every
        edge stored, sorted by (source, target), no self-loops.

    Example:
        >>> g = nnk_graph(torch.rand(100, 8), k=10)
        >>> bool((g.edge_index[0] != g.edge_index[1]).all())
        True
    """
    return NNKOptions.pick(locals()).graph(x, edge_rule)


def nnk_interpolation(x: Tensor, labels: Tensor, k: int, result: NNKResult | None = None,
                      **nnk_options) -> tuple[Tensor, float]:
    """Leave-one-out NNK label interpolation (Shekkizhar & Ortega, Asilomar 2021; ``papers/004``).

    ``y_hat_i = sum_j theta_ij y_j / sum_j theta_ij`` over i's own NNK neighbors (i is never its own
    candidate, so this is leave-one-out). A node whose weights are all 0 takes the label of its nearest
    (kept) candidate.

    Args:
        x: (N, ...) features; labels: (N,) integer classes; ``nnk_options``: see :func:`nnk_weights`
            (``convention="deepnnk"``: the authors' LOO conventions, module docstring).
        result: the NNK solution of ``x`` already computed with these options (``nnk_weights(x, k, ...)``,
            e.g. ``ManifoldGraphMetrics(...).fit(x).nnk_``): reused instead of solving again.

    Returns:
        ``(predictions (N, C) soft labels (rows sum to 1), classification error in [0, 1])``; the predicted
        class is the argmax (ties: smallest class index).
    """
    options, neighbors = nnk_options_of(k, nnk_options)
    flat = check_features(x)
    y = check_labels(labels, flat.shape[0]).to(flat.device)
    if result is None:
        result = options.weights(flat, neighbors)
    elif tuple(result.neighbors.shape) != (flat.shape[0], k):
        raise ValueError(f"result must be the NNK solution of x with k = {k}: neighbors of shape "
                         f"({flat.shape[0]}, {k}), got {tuple(result.neighbors.shape)}")
    pred = nnk_loo_predictions(result, y, convention=nnk_options.get("convention"))
    error = float((pred.argmax(1) != y).double().mean())
    return pred.to(flat.dtype), error


def nnk_loo_predictions(result: NNKResult, labels: Tensor, num_classes: int | None = None,
                        convention: str | None = None) -> Tensor:
    """Leave-one-out soft labels of a directed NNK solution (the interpolation of :func:`nnk_interpolation`).

    ``y_hat_i = sum_j theta_ij onehot(y_j) / sum_j theta_ij`` over i's candidates (the authors'
    ``majority_vote_classifier``: weights normalized to sum 1, prediction = argmax); a node whose weights are
    all 0 takes the label of its nearest kept candidate (the authors' code divides 0 by 0 there).

    Args:
        result: :class:`NNKResult` with neighbors and weights (N, k); its neighbors index ``labels``.
        labels: (M,) integer classes of the points the neighbors index (M = N for a graph of the points
            themselves).
        num_classes: number of columns (default ``labels.max() + 1``).
        convention: None (the result's), or the convention the result must have been computed with
            (``ValueError`` otherwise): the interpolation itself is the same for both.

    Returns:
        (N, num_classes) float64 soft labels, rows summing to 1.
    """
    if convention is not None and check_convention(convention) != result.convention:
        raise ValueError(f"result was computed with convention={result.convention!r}, not {convention!r}: "
                         f"recompute it with nnk_weights(..., convention={convention!r})")
    y = labels.long().to(result.neighbors.device)
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    k = result.neighbors.shape[1]
    onehot = F.one_hot(y, num_classes).double()
    w = result.weights.double()
    empty = w.sum(1) <= 0
    first = torch.zeros(w.shape[0], dtype=torch.long, device=w.device)
    if result.valid is not None:  # nearest kept candidate (the valid mask has at least one True per row)
        first = result.valid.to(torch.uint8).argmax(1)
    nearest = F.one_hot(first, k).double()
    w = torch.where(empty[:, None], nearest, w)  # nearest neighbor
    return torch.einsum("nk,nkc->nc", w, onehot[result.neighbors]) / w.sum(1, keepdim=True)


def nnk_layer_errors(features: dict[str, Tensor], labels: Tensor, k: int, *, kernel: str | None = None,
                     attention_mask: Tensor | None = None, reduce: str | None = None, **nnk_options) -> dict[str, float]:
    """Leave-one-out NNK interpolation error of every layer ``{name: (N, ...) features}`` -> ``{name: error}``.

    Args:
        features: ``{layer name: (N, ...) features}``, or (N, T, H) token features with ``attention_mask``;
            an empty dict is a ``ValueError`` (as in :func:`geomlat.analysis.layer_label_variation`).
        labels: (N,) integer classes; k: initial k-NN size.
        kernel: any kernel of :func:`nnk_weights`; ``None``: the convention's default (``"cosine"``, valid
            on data of any sign since NNK needs only a positive semi-definite kernel; ``"cosine_shifted"``
            for ``convention="deepnnk"``). ``"auto"`` applies the LGG rule per layer.
        attention_mask: (N, T), 1 on real tokens (Hugging Face's convention); reduce: how tokens become one
            vector (:func:`geomlat.sequences.sample_vectors`: the mean of the real tokens by default with a
            mask; a 3-D input without either is flattened with geomlat's warning). Padding never matters.
        nnk_options: the other options of :func:`nnk_weights`.
    """
    from .graphs import feature_vectors

    if not features:
        raise ValueError("nnk_layer_errors: features is empty: pass a dict {layer name: (N, ...) tensor}")
    return {name: nnk_interpolation(feature_vectors(feat, attention_mask, reduce, f"nnk_layer_errors: features[{name!r}]"),
                                    labels, k, kernel=kernel, **nnk_options)[1]
            for name, feat in features.items()}
