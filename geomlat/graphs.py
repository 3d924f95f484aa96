"""Latent geometry graphs (LGGs): steps 1-4 of Section 3.3 of the LGG paper (see ``shared/METHOD.md``).

A batch of B intermediate representations ``x`` of shape (B, ...) is flattened to (B, d) and turned
into a B-vertex graph:

1. similarity between samples (``kernel``): cosine, RBF, or 0.5 + 0.5 cosine;
2. each vertex keeps its ``k`` most similar other vertices (``k=None``: full graph), no self-loops;
3. symmetrization: ``"max"`` joins i and j when either is a k-NN of the other, ``"mutual"`` when both are;
   the weight is their similarity;
4. optional normalization ``D^-1/2 A D^-1/2``.

Variants from the GKD talk: task-specific graphs (``mask="inter"`` keeps only edges between distinct
classes, ``"intra"`` only edges inside a class; applied after step 3, before normalization) and smoothed
graphs (``power=p`` returns A^p, after normalization).

The whole construction is one B x d x B matrix product plus O(B^2) element-wise work. The weights are
differentiable w.r.t. ``x``; the k-NN selection is not (it is a piecewise-constant choice).

Numerics: float16/bfloat16 inputs (also under ``torch.autocast``) are computed in float32 and give
float32 weights. Any finite input gives a finite graph: cosine is invariant to the scale of each row and
the RBF with the estimated bandwidth to a global scale, so when squared norms would overflow or fall
below ``sqrt(finfo.tiny)`` the rows (cosine) or the whole batch (RBF; a fixed ``sigma`` is divided by
the same factor) are first divided by a power of 2 (:func:`row_scales`, :func:`batch_scale`). Ordinary
inputs never take that path, so their values are unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import to_dense_adj

from ._checks import check_choice, check_features, check_features_min, check_k, check_labels, full_precision

KERNELS = ("auto", "cosine", "rbf", "cosine_shifted")
SYMMETRIZATIONS = ("max", "mutual")
NORMALIZATIONS = (None, "sym")
MASKS = (None, "inter", "intra")

#: Default number of neighbours used to estimate the RBF bandwidth when the graph is full (``k=None``).
SIGMA_NEIGHBOURS = 10


def resolve_kernel(x: Tensor, kernel: str = "auto") -> str:
    """Return the concrete kernel name: ``"auto"`` is ``"cosine"`` for non-negative ``x``, else ``"rbf"``."""
    check_choice(kernel, "kernel", KERNELS)
    if kernel == "auto":
        return "cosine" if bool((x >= 0).all()) else "rbf"
    return kernel


class _Gram(torch.autograd.Function):
    """``x x^T`` (B, d) -> (B, B) whose backward is one matrix product, ``dx = (dG + dG^T) x``.

    Autograd's ``x @ x.T`` differentiates the two factors separately: two (B, B) x (B, d) products.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x @ x.T

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return (grad + grad.T) @ x


def gram(x: Tensor) -> Tensor:
    """Gram matrix ``x x^T`` of the rows of ``x`` (B, d) -> (B, B), with a one-product backward."""
    return _Gram.apply(x) if x.requires_grad else x @ x.T


def _power_of_two(scale: Tensor) -> Tensor:
    """The power of 2 ``2^(e-1)`` with ``scale = m 2^e``, m in [0.5, 1) (0 -> 1): dividing by it is exact."""
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    _, exponent = torch.frexp(scale)
    return torch.ldexp(torch.ones_like(scale), exponent - 1)


def row_scales(x: Tensor) -> Tensor:
    """(B, 1) power-of-2 scale of each row of ``x`` (B, d), detached: ``x / row_scales(x)`` has max-abs in [1, 2)."""
    return _power_of_two(x.detach().abs().amax(dim=1, keepdim=True))


def batch_scale(x: Tensor) -> Tensor:
    """Power-of-2 scale (scalar, detached) of the whole batch ``x``: ``x / batch_scale(x)`` has max-abs in [1, 2)."""
    return _power_of_two(x.detach().abs().amax())


def norms_out_of_range(sq_norms: Tensor, x: Tensor, per_row: bool) -> bool:
    """Whether the (B,) squared row norms of ``x`` overflowed or lost precision to underflow.

    Safe: every squared norm finite and at most ``finfo.max / 8`` (so sums of a few of them stay finite),
    and (``per_row``) every non-zero one at least ``sqrt(finfo.tiny)`` (products of the significant entries
    stay normal numbers) or (batch) the largest one so; a zero squared norm of a non-zero row is underflow.
    """
    if sq_norms.device.type == "meta":  # shapes only: no value to test
        return False
    sq_norms = sq_norms.detach()
    info = torch.finfo(sq_norms.dtype)
    top = sq_norms.max()
    if not bool(torch.isfinite(top)) or float(top) > info.max / 8:
        return True
    floor = info.tiny**0.5
    if not per_row:
        return 0.0 < float(top) < floor or (float(top) == 0.0 and bool((x != 0).any()))
    nonzero = sq_norms > 0
    if bool((sq_norms[nonzero] < floor).any()):
        return True
    return not bool(nonzero.all()) and bool((x[~nonzero] != 0).any())


@full_precision
def squared_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows of ``x`` (B, d) -> (B, B), from one Gram matrix.

    Computed as is: inputs whose squared norms overflow give inf (see :func:`batch_scale`).
    """
    return _distances_from_gram(gram(x))


def _distances_from_gram(g: Tensor) -> Tensor:
    """(B, B) squared distances ``G_ii + G_jj - 2 G_ij`` (clamped at 0) of a (B, B) Gram matrix."""
    sq = g.diagonal()
    return (sq[:, None] + sq[None, :] - 2.0 * g).clamp_min(0.0)


def estimate_sigma(sq_dist: Tensor, k: int | None = None) -> Tensor:
    """RBF bandwidth rule of the authors' code: mean distance to the k-th nearest neighbour, divided by 3.

    ``k=None`` uses ``min(SIGMA_NEIGHBOURS, B - 1)`` neighbours. If every sample coincides (the estimate is
    0) the bandwidth is 1: all weights are then exp(0) = 1 whatever the bandwidth. The estimate is a
    differentiable function of the distances; a zero distance contributes 0 and no gradient (the
    derivative of the square root at 0 is not taken).

    Args:
        sq_dist: (B, B) squared distances.
    Returns:
        scalar tensor.
    """
    b = sq_dist.shape[0]
    kk = min(SIGMA_NEIGHBOURS, b - 1) if k is None else k
    off_diag = sq_dist.masked_fill(torch.eye(b, dtype=torch.bool, device=sq_dist.device), float("inf"))
    kth = off_diag.topk(kk, dim=1, largest=False).values[:, -1]
    apart = kth > 0
    # sqrt only of positive distances: the clamp never moves one, it only keeps the unused branch finite
    root = torch.where(apart, kth.clamp_min(torch.finfo(kth.dtype).tiny).sqrt(), torch.zeros_like(kth))
    sigma = root.mean() / 3.0
    return torch.where(sigma > 0, sigma, torch.ones_like(sigma))


@full_precision
def similarity(x: Tensor, kernel: str = "auto", sigma: float | Tensor | None = None, k: int | None = None) -> Tensor:
    """Dense similarity matrix between the samples of a batch (step 1).

    Args:
        x: (B, ...) representations (flattened to (B, d)).
        kernel: ``"cosine"`` (non-negative data only), ``"rbf"`` ``exp(-|x_i - x_j|^2 / (2 sigma^2))``,
            ``"cosine_shifted"`` ``0.5 + 0.5 cos`` (any sign, in [0, 1]), or ``"auto"``.
        sigma: RBF bandwidth; ``None`` estimates it with :func:`estimate_sigma` (using ``k``).
        k: only used to estimate ``sigma``.

    Returns:
        (B, B) similarities, diagonal included. A zero row has cosine similarity 0 with everything.
    """
    return _similarity(check_features(x), kernel, sigma, k)


@full_precision
def cosine_gram(flat: Tensor) -> Tensor:
    """(B, B) cosine similarities of the rows of ``flat`` (B, d) from one Gram matrix.

    ``G = x x^T`` then ``G_ij / (n_i n_j)`` with the norms ``n_i = sqrt(G_ii)`` read off its diagonal, so
    the (B, d) input is read once by the matrix product and never copied (normalizing the rows first, as
    ``F.normalize(x) @ F.normalize(x).T``, costs two more passes over it and a (B, d) copy). A zero row
    has cosine 0 with everything, never NaN, and gets a zero gradient (the cosine has no derivative
    there; ``F.normalize``'s eps would give it a gradient of ~1e12, inf once cast back to float16).

    When a squared norm overflows or underflows (rows of scale ~1e19 or ~1e-19 in float32) the rows are
    first divided by their power-of-2 :func:`row_scales` (exact; cosine does not depend on them) and the
    Gram recomputed: every non-zero row then has a squared norm >= 1.
    """
    g = gram(flat)
    if norms_out_of_range(g.diagonal(), flat, per_row=True):
        flat = flat / row_scales(flat)
        g = gram(flat)
    sq = g.diagonal()
    # 1 / n_i, and 0 for a zero row (after the check above every other squared norm is a normal number)
    inv = torch.where(sq > 0, sq.clamp_min(torch.finfo(sq.dtype).tiny).rsqrt(), torch.zeros_like(sq))
    return g * inv[:, None] * inv[None, :]


def _similarity(x: Tensor, kernel: str, sigma: float | Tensor | None, k: int | None, lo: float | None = None) -> Tensor:
    """:func:`similarity` of an already checked (B, d) tensor; ``lo`` its minimum if known (skips a pass)."""
    if lo is None:
        kernel = resolve_kernel(x, kernel)
        negative = kernel == "cosine" and bool((x < 0).any())
    else:
        check_choice(kernel, "kernel", KERNELS)
        if kernel == "auto":
            kernel = "cosine" if lo >= 0 else "rbf"
        negative = kernel == "cosine" and lo < 0
    if negative:
        raise ValueError(
            "kernel='cosine' needs non-negative data (e.g. post-ReLU), but x has negative entries: "
            "use kernel='rbf', 'cosine_shifted' or 'auto'"
        )
    if kernel in ("cosine", "cosine_shifted"):
        cos = cosine_gram(x)
        return cos if kernel == "cosine" else 0.5 + 0.5 * cos
    if sigma is not None and not torch.is_tensor(sigma) and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    g = gram(x)
    if norms_out_of_range(g.diagonal(), x, per_row=False):
        # |x_i - x_j|^2 / sigma^2 is unchanged when x and sigma are divided by the same factor, and the
        # estimated sigma scales with x: compute in units of the batch's scale
        scale = batch_scale(x)
        x = x / scale
        if sigma is not None:
            sigma = sigma / scale
        g = gram(x)
    sq_dist = _distances_from_gram(g)
    if sigma is None:
        sigma = estimate_sigma(sq_dist, k)
    # a (rescaled) sigma^2 below the smallest normal float would give 0 / 0 on the diagonal
    two_var = 2.0 * sigma**2
    two_var = two_var.clamp_min(torch.finfo(sq_dist.dtype).tiny) if torch.is_tensor(two_var) else max(two_var, torch.finfo(sq_dist.dtype).tiny)
    return torch.exp(-sq_dist / two_var)


def knn_mask(sim: Tensor, k: int | None, symmetrize: str = "max") -> Tensor:
    """Boolean (B, B) edge mask of a similarity matrix (steps 2-3), without self-loops.

    Each row keeps its ``k`` largest off-diagonal similarities (``k=None``: all). ``"max"`` keeps (i, j)
    when j is a k-NN of i or i a k-NN of j; ``"mutual"`` when both hold.
    """
    check_choice(symmetrize, "symmetrize", SYMMETRIZATIONS)
    b = sim.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    if k is None:
        return ~eye
    check_k(k, b)
    neighbours = sim.detach().masked_fill(eye, float("-inf")).topk(k, dim=1).indices
    mask = torch.zeros(b, b, dtype=torch.bool, device=sim.device)
    mask.scatter_(1, neighbours, True)
    return mask | mask.T if symmetrize == "max" else mask & mask.T


def class_mask(labels: Tensor, kind: str) -> Tensor:
    """(B, B) boolean mask of pairs of distinct classes (``"inter"``, ``1 - Y Y^T``) or same class (``"intra"``)."""
    check_choice(kind, "mask", ("inter", "intra"))
    same = labels[:, None] == labels[None, :]
    return ~same if kind == "inter" else same


def normalize_adjacency(adj: Tensor) -> Tensor:
    """``D^-1/2 A D^-1/2`` for a (B, B) adjacency; an isolated vertex (degree 0) keeps a zero row, never inf/NaN."""
    deg = adj.sum(dim=1)
    safe = torch.where(deg > 0, deg, torch.ones_like(deg))
    inv_sqrt = torch.where(deg > 0, safe.rsqrt(), torch.zeros_like(deg))
    return inv_sqrt[:, None] * adj * inv_sqrt[None, :]


@full_precision
def latent_adjacency(
    x: Tensor,
    k: int | None = None,
    kernel: str = "auto",
    sigma: float | Tensor | None = None,
    symmetrize: str = "max",
    normalize: str | None = None,
    self_loops: bool = False,
    mask: str | None = None,
    labels: Tensor | None = None,
    power: int = 1,
) -> tuple[Tensor, Tensor]:
    """Dense form of :func:`latent_graph`: returns ``(adjacency (B, B), edges (B, B) bool)``.

    ``edges`` is the structural edge set (an edge can carry weight 0, e.g. two orthogonal samples);
    ``adjacency`` is zero outside it. Losses that need the dense matrix (GKD) use this directly.
    """
    check_choice(normalize, "normalize", NORMALIZATIONS)
    check_choice(mask, "mask", MASKS)
    if isinstance(power, bool) or not isinstance(power, int) or power < 1:
        raise ValueError(f"power must be an integer >= 1, got {power!r}")
    flat, lo = check_features_min(x)
    b = flat.shape[0]
    check_k(k, b)
    sim = _similarity(flat, kernel, sigma, k, lo)  # flat already checked: no second pass over it
    edges = knn_mask(sim, k, symmetrize)
    if mask is not None:
        if labels is None:
            raise ValueError(f"mask={mask!r} needs the labels of the batch (labels=...)")
        edges = edges & class_mask(check_labels(labels, b).to(flat.device), mask)
    eye = torch.eye(b, dtype=torch.bool, device=flat.device)
    if self_loops:
        edges = edges | eye
    adj = sim * edges
    if normalize == "sym":
        adj = normalize_adjacency(adj)
    if power > 1:
        adj = torch.linalg.matrix_power(adj, power)
        edges = torch.linalg.matrix_power(edges.to(adj.dtype), power) > 0
        if not self_loops:
            edges = edges & ~eye
            adj = adj * edges
    return adj, edges


def latent_graph(
    x: Tensor,
    k: int | None = None,
    kernel: str = "auto",
    sigma: float | Tensor | None = None,
    symmetrize: str = "max",
    normalize: str | None = None,
    self_loops: bool = False,
    mask: str | None = None,
    labels: Tensor | None = None,
    power: int = 1,
) -> Data:
    """Latent geometry graph of a batch of representations.

    Args:
        x: (B, ...) representations of one layer; flattened to (B, d). NaN/Inf are rejected.
        k: neighbours kept per vertex, ``1 <= k < B``; ``None`` keeps the full graph.
        kernel: ``"auto"`` (cosine if ``x >= 0`` everywhere, else RBF), ``"cosine"``, ``"rbf"`` or
            ``"cosine_shifted"`` (0.5 + 0.5 cos).
        sigma: RBF bandwidth. ``None``: mean distance to the k-th nearest neighbour / 3 (the authors'
            rule; ``k=None`` uses the 10th neighbour, or B - 1 if fewer), see :func:`estimate_sigma`.
        symmetrize: ``"max"`` (either is a k-NN of the other, the paper's rule) or ``"mutual"``.
        normalize: ``None`` or ``"sym"`` for ``D^-1/2 A D^-1/2`` (isolated vertices keep zero rows).
        self_loops: keep A_ii (the similarity of a sample with itself). Default False (A_ii = 0).
        mask: ``None``, ``"inter"`` (only edges between distinct classes) or ``"intra"`` (same class);
            needs ``labels``. Applied before normalization.
        labels: (B,) integer classes; stored as ``data.y``.
        power: smoothed graph ``A^p`` (after normalization).

    Returns:
        ``Data(edge_index (2, E), edge_weight (E,), num_nodes=B[, y=labels])``, both directions of every
        edge present, ``edge_weight`` differentiable w.r.t. ``x``.

    Example:
        >>> x = torch.rand(8, 16)
        >>> g = latent_graph(x, k=3, normalize="sym")
        >>> g.num_nodes, g.edge_index.shape[0]
        (8, 2)
    """
    adj, edges = latent_adjacency(x, k, kernel, sigma, symmetrize, normalize, self_loops, mask, labels, power)
    edge_index = edges.nonzero().T
    data = Data(edge_index=edge_index, edge_weight=adj[edge_index[0], edge_index[1]], num_nodes=adj.shape[0])
    if labels is not None:
        data.y = check_labels(labels, adj.shape[0]).to(adj.device)
    return data


def to_dense(g: Data) -> Tensor:
    """(B, B) dense adjacency of one LGG (differentiable w.r.t. ``edge_weight``)."""
    weight = getattr(g, "edge_weight", None)
    return to_dense_adj(g.edge_index, edge_attr=weight, max_num_nodes=g.num_nodes)[0]


def from_dense(adj: Tensor) -> Data:
    """LGG of a dense (B, B) adjacency; every non-zero entry (diagonal included) becomes an edge."""
    if not torch.is_tensor(adj) or adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"adjacency must be a square (B, B) tensor, got {getattr(adj, 'shape', type(adj))}")
    if not torch.isfinite(adj).all():
        raise ValueError("adjacency contains NaN or Inf")
    edge_index = (adj != 0).nonzero().T
    return Data(edge_index=edge_index, edge_weight=adj[edge_index[0], edge_index[1]], num_nodes=adj.shape[0])
