"""Latent geometry graphs (LGGs): steps 1-4 of Section 3.3 of the LGG paper (see ``shared/METHOD.md``).

A batch of B intermediate representations ``x`` of shape (B, ...) is flattened to (B, d) and turned
into a B-vertex graph:

1. similarity between samples (``kernel``): cosine, RBF, 0.5 + 0.5 cosine, or any kernel registered with
   :func:`geomlat.kernels.register_kernel` (the registry NNK graphs share);
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
the same factor) are first divided by a power of 2 (:func:`geomlat.kernels.row_scales`,
:func:`geomlat.kernels.batch_scale`). Ordinary inputs never take that path, so their values are unchanged.
These numerics live in :mod:`geomlat.kernels`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._checks import check_choice, check_features, check_features_min, check_k, check_labels, full_precision, value_check
from .options import Options, keep_defaults, option_set
from .kernels import get_kernel, kernel_names
from .sequences import REDUCTIONS, empty_sequences, sample_vectors

if TYPE_CHECKING:  # torch_geometric is imported only where a Data object is built (its import costs seconds)
    from torch_geometric.data import Data

SYMMETRIZATIONS = ("max", "mutual")
NORMALIZATIONS = (None, "sym")
MASKS = (None, "inter", "intra")


def feature_vectors(x: Tensor, attention_mask: Tensor | None = None, reduce: str | None = None, what: str = "x") -> Tensor:
    """(B, d) vectors of ``x`` by :func:`geomlat.sequences.sample_vectors` (the one rule for token features and
    padding), and a ``ValueError`` (deferred inside :func:`geomlat.checks.deferred_value_checks`) when a row of
    ``attention_mask`` has no real token: such a sample has no representation."""
    vectors = sample_vectors(x, attention_mask, reduce, what=what)
    if attention_mask is not None:
        value_check(~empty_sequences(attention_mask).any(),
                    f"{what}: a row of attention_mask has no real token (all zeros): that sample has no representation")
    return vectors


def resolve_kernel(x: Tensor, kernel: str = "auto", *others: Tensor) -> str:
    """Return the concrete kernel name: ``"auto"`` is ``"cosine"`` when ``x`` (and every tensor of ``others``)
    is non-negative, else ``"rbf"``; any other name must be registered (:func:`geomlat.kernels.register_kernel`).

    The default-kernel rule of geomlat. LGGs and the graph losses (GKD, label variation, the regularizer)
    default to ``"auto"``: their edge weights must be non-negative, so non-negative data (post-ReLU CNN
    features: the authors' setting) get the cosine kernel and signed data (transformer hidden states,
    pre-activations, embeddings), on which cosine weights would be negative, get the RBF kernel with the
    estimated bandwidth (:func:`geomlat.kernels.estimate_sigma`). NNK (:func:`geomlat.nnk.nnk_weights`) defaults to the
    cosine kernel on data of any sign: it needs only a positive semi-definite kernel (its weights are
    non-negative by construction), and cosine is PSD whatever the signs. Graphs that are compared (GKD's
    teacher and student, one layer pair) pass both tensors, so both get the same kernel.
    """
    if kernel == "auto":
        return "cosine" if all(bool((t >= 0).all()) for t in (x, *others)) else "rbf"
    check_kernel(kernel)
    return kernel


def check_kernel(kernel: str) -> None:
    """``ValueError`` unless ``kernel`` is ``"auto"`` or a registered kernel (the message lists them)."""
    if kernel != "auto" and (not isinstance(kernel, str) or kernel not in kernel_names()):
        raise ValueError(f"unknown kernel {kernel!r}; expected 'auto' or a registered kernel: {list(kernel_names())}")


@full_precision
def similarity(x: Tensor, kernel: str = "auto", sigma: float | Tensor | None = None, k: int | None = None, *,
               auto_min: float | Tensor | None = None) -> Tensor:
    """Dense similarity matrix between the samples of a batch (step 1).

    Args:
        x: (B, ...) representations (flattened to (B, d)).
        kernel: ``"cosine"`` (non-negative data only), ``"rbf"`` ``exp(-|x_i - x_j|^2 / (2 sigma^2))``,
            ``"cosine_shifted"`` ``0.5 + 0.5 cos`` (any sign, in [0, 1]), ``"auto"``, or any kernel
            registered with :func:`geomlat.kernels.register_kernel`.
        sigma: bandwidth of a kernel that has one (RBF); ``None`` estimates it (RBF: :func:`geomlat.kernels.estimate_sigma`,
            using ``k``).
        k: only used to estimate ``sigma``.
        auto_min: the minimum that decides ``kernel="auto"`` (default: the minimum of ``x``). Graphs that are
            compared pass the minimum of both inputs, so that both get the same kernel (GKD's layer pair).

    Returns:
        (B, B) similarities, diagonal included. A zero row has cosine similarity 0 with everything.
    """
    flat = check_features(x)
    return _similarity(flat, kernel, sigma, k, None if kernel != "auto" else auto_min)


def _similarity(x: Tensor, kernel: str, sigma: float | Tensor | None, k: int | None, lo: float | None = None) -> Tensor:
    """:func:`similarity` of an already checked (B, d) tensor; ``lo`` its minimum if known (skips a pass)."""
    check_kernel(kernel)
    if kernel == "auto" and torch.is_tensor(lo):
        # deferred value checks (the engine, torch.compile): the choice without a host read, both from the
        # same Gram matrix (the compiler shares the product); cosine's row-norm range is then checked too
        return torch.where(lo >= 0, get_kernel("cosine").similarity(x, sigma, k), _similarity(x, "rbf", sigma, k, lo))
    if kernel == "auto":
        kernel = resolve_kernel(x, kernel) if lo is None else ("cosine" if lo >= 0 else "rbf")
    kern = get_kernel(kernel)
    if kern.needs_nonnegative:  # a tensor `lo` (deferred value checks): recorded, not read on the host
        value_check(~(x < 0).any() if lo is None else lo >= 0,
                    f"kernel={kernel!r} needs non-negative data (e.g. post-ReLU), but x has negative entries: "
                    "use kernel='rbf', 'cosine_shifted' or 'auto'")
    if kern.uses_sigma and sigma is not None and not torch.is_tensor(sigma) and not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return kern.similarity(x, sigma, k)


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
    neighbors = sim.detach().masked_fill(eye, float("-inf")).topk(k, dim=1).indices
    mask = torch.zeros(b, b, dtype=torch.bool, device=sim.device)
    mask.scatter_(1, neighbors, True)
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


@option_set
class GraphOptions(Options):
    """The options of a latent geometry graph (:func:`latent_graph`, :func:`latent_adjacency`), validated once.

    Fields (documented in :func:`latent_graph`): ``k``, ``kernel``, ``sigma``, ``symmetrize``, ``normalize``,
    ``self_loops``, ``mask``, ``power``, ``reduce``. What belongs to a batch (``labels``, ``attention_mask``)
    is given per call. ``k`` is checked against the batch size when a graph is built.

    Example:
        >>> opts = GraphOptions(k=3, normalize="sym")
        >>> x = torch.rand(8, 16)
        >>> bool((opts.adjacency(x)[0] == latent_adjacency(x, k=3, normalize="sym")[0]).all())
        True
    """

    k: int | None = None
    kernel: str = "auto"
    sigma: float | Tensor | None = None
    symmetrize: str = "max"
    normalize: str | None = None
    self_loops: bool = False
    mask: str | None = None
    power: int = 1
    reduce: str | None = None

    def __post_init__(self):
        if self.k is not None:
            check_k(self.k, self.k + 1)  # an int >= 1; the bound k < B is checked on the batch
        check_kernel(self.kernel)
        sigma = self.sigma
        if sigma is not None and not torch.is_tensor(sigma) and (isinstance(sigma, bool) or not sigma > 0):
            raise ValueError(f"sigma must be > 0, got {sigma}")
        check_choice(self.symmetrize, "symmetrize", SYMMETRIZATIONS)
        check_choice(self.normalize, "normalize", NORMALIZATIONS)
        if not isinstance(self.self_loops, bool):
            raise TypeError(f"self_loops must be a bool, got {self.self_loops!r}")
        check_choice(self.mask, "mask", MASKS)
        if isinstance(self.power, bool) or not isinstance(self.power, int) or self.power < 1:
            raise ValueError(f"power must be an integer >= 1, got {self.power!r}")
        check_choice(self.reduce, "reduce", REDUCTIONS)

    @full_precision
    def adjacency(self, x: Tensor, labels: Tensor | None = None, attention_mask: Tensor | None = None,
                  what: str = "latent_adjacency: x", *, auto_min: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:func:`latent_adjacency` of ``x`` with these options: ``(adjacency (B, B), edges (B, B) bool)``."""
        return _adjacency(feature_vectors(x, attention_mask, self.reduce, what=what), self, labels, auto_min)

    def graph(self, x: Tensor, labels: Tensor | None = None, attention_mask: Tensor | None = None,
              what: str = "latent_graph: x") -> Data:
        """:func:`latent_graph` of ``x`` with these options (a PyG ``Data``)."""
        from torch_geometric.data import Data

        adj, edges = self.adjacency(x, labels, attention_mask, what)
        edge_index = edges.nonzero().T
        data = Data(edge_index=edge_index, edge_weight=adj[edge_index[0], edge_index[1]], num_nodes=adj.shape[0])
        if labels is not None:
            data.y = check_labels(labels, adj.shape[0]).to(adj.device)
        return data


def graph_options(options: GraphOptions | None, owner, **keywords) -> GraphOptions:
    """The graph options of a consumer that takes either ``options=GraphOptions(...)`` or its own graph
    keywords (e.g. ``LabelVariationLoss(k=4)`` or ``LabelVariationLoss(options=GraphOptions(k=4))``).

    Args:
        options: the consumer's ``options`` argument (None: build them from ``keywords``).
        owner: the callable taking ``keywords`` (its ``__init__``): with ``options`` given, every keyword must
            keep the default of ``owner``'s signature (``ValueError`` naming the ones set: both would be
            ambiguous).
        keywords: the consumer's graph keywords (names of :class:`GraphOptions` fields).
    """
    if options is None:
        return GraphOptions(**keywords)
    if not isinstance(options, GraphOptions):
        raise TypeError(f"options must be a GraphOptions, got {type(options).__name__}")
    keep_defaults(owner, "options", **keywords)
    return options


def _adjacency(x: Tensor, options: GraphOptions, labels: Tensor | None,
               auto_min: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Dense LGG of (B, d) sample vectors (steps 1-4): ``(adjacency (B, B), edges (B, B) bool)``; ``auto_min``
    decides ``kernel="auto"`` (:func:`similarity`) instead of the minimum of ``x``."""
    flat, lo = check_features_min(x)
    if options.kernel == "auto" and auto_min is not None:
        lo = auto_min  # the pair's minimum (<= this input's): the same kernel for both graphs of a pair
    b = flat.shape[0]
    k, mask, power, self_loops = options.k, options.mask, options.power, options.self_loops
    check_k(k, b)
    sim = _similarity(flat, options.kernel, options.sigma, k, lo)  # flat already checked: no second pass over it
    edges = knn_mask(sim, k, options.symmetrize)
    if mask is not None:
        if labels is None:
            raise ValueError(f"mask={mask!r} needs the labels of the batch (labels=...)")
        edges = edges & class_mask(check_labels(labels, b).to(flat.device), mask)
    eye = torch.eye(b, dtype=torch.bool, device=flat.device)
    if self_loops:
        edges = edges | eye
    adj = sim * edges
    if options.normalize == "sym":
        adj = normalize_adjacency(adj)
    if power > 1:
        adj = torch.linalg.matrix_power(adj, power)
        edges = torch.linalg.matrix_power(edges.to(adj.dtype), power) > 0
        if not self_loops:
            edges = edges & ~eye
            adj = adj * edges
    return adj, edges


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
    reduce: str | None = None,
    attention_mask: Tensor | None = None,
    *,
    auto_min: float | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Dense form of :func:`latent_graph` (same arguments): returns ``(adjacency (B, B), edges (B, B) bool)``.

    ``edges`` is the structural edge set (an edge can carry weight 0, e.g. two orthogonal samples);
    ``adjacency`` is zero outside it. Losses that need the dense matrix (GKD) use this directly.
    The options are validated by :class:`GraphOptions` (``GraphOptions(...).adjacency(x)`` is the same).
    ``auto_min`` (see :func:`similarity`) decides ``kernel="auto"`` instead of the minimum of ``x``.
    """
    return GraphOptions.pick(locals()).adjacency(x, labels, attention_mask, auto_min=auto_min)


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
    reduce: str | None = None,
    attention_mask: Tensor | None = None,
) -> Data:
    """Latent geometry graph of a batch of representations.

    Args:
        x: (B, ...) representations of one layer; flattened to (B, d) (all dimensions but the batch one,
            e.g. (B, C, H, W) -> (B, C * H * W)), or (B, T, H) token features with ``attention_mask``.
            NaN/Inf are rejected (in padding positions they never matter).
        k: neighbors kept per vertex, ``1 <= k < B``; ``None`` keeps the full graph.
        kernel: ``"auto"`` (cosine if ``x >= 0`` everywhere, else RBF: geomlat's default-kernel rule, see
            :func:`resolve_kernel`), ``"cosine"``, ``"rbf"``,
            ``"cosine_shifted"`` (0.5 + 0.5 cos), or a kernel registered with
            :func:`geomlat.kernels.register_kernel`.
        sigma: RBF bandwidth. ``None``: mean distance to the k-th nearest neighbor / 3 (the authors'
            rule; ``k=None`` uses the 10th neighbor, or B - 1 if fewer), see :func:`geomlat.kernels.estimate_sigma`.
        symmetrize: ``"max"`` (either is a k-NN of the other, the paper's rule) or ``"mutual"``.
        normalize: ``None`` or ``"sym"`` for ``D^-1/2 A D^-1/2`` (isolated vertices keep zero rows).
        self_loops: keep A_ii (the similarity of a sample with itself). Default False (A_ii = 0).
        mask: ``None``, ``"inter"`` (only edges between distinct classes) or ``"intra"`` (same class);
            needs ``labels``. Applied before normalization.
        labels: (B,) integer classes; stored as ``data.y``.
        power: smoothed graph ``A^p`` (after normalization).
        reduce: how (B, T, ..., H) token features become one vector per sample
            (:func:`geomlat.sequences.sample_vectors`, the rule shared by every function of geomlat):
            ``"mean"`` (real tokens only with a mask; the default when ``attention_mask`` is given),
            ``"first"`` (CLS), ``"last"`` (last real token), ``"flatten"`` ((B, T * H), refused with a mask)
            or ``None``: with a mask, the mean; without, the flattening, with a warning for a 3-D input.
        attention_mask: (B, T), 1 on real tokens and 0 on padding (Hugging Face's convention): padding never
            enters the graph, whatever its values.

    Returns:
        ``Data(edge_index (2, E), edge_weight (E,), num_nodes=B[, y=labels])``, both directions of every
        edge present, ``edge_weight`` differentiable w.r.t. ``x``.

    ``torch.compile``: :func:`latent_adjacency` is one graph (inside
    :func:`geomlat.checks.deferred_value_checks`); the edge list has a data-dependent size (``nonzero``, a
    graph break unless ``torch._dynamo.config.capture_dynamic_output_shape_ops``) and PyG's ``Data`` does not
    trace: compile without ``fullgraph``, or compile :func:`latent_adjacency`.

    Example:
        >>> x = torch.rand(8, 16)
        >>> g = latent_graph(x, k=3, normalize="sym")
        >>> g.num_nodes, g.edge_index.shape[0]
        (8, 2)
    """
    return GraphOptions.pick(locals()).graph(x, labels, attention_mask)


def to_dense(g: Data) -> Tensor:
    """(B, B) dense adjacency of one LGG (differentiable w.r.t. ``edge_weight``)."""
    weight = getattr(g, "edge_weight", None)
    index = g.edge_index
    if weight is None:
        weight = torch.ones(index.shape[1], device=index.device)
    dense = torch.zeros(g.num_nodes, g.num_nodes, dtype=weight.dtype, device=weight.device)
    return dense.index_put((index[0], index[1]), weight, accumulate=True)  # duplicate edges add up, as to_dense_adj


def from_dense(adj: Tensor) -> Data:
    """LGG of a dense (B, B) adjacency; every non-zero entry (diagonal included) becomes an edge."""
    if not torch.is_tensor(adj) or adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"adjacency must be a square (B, B) tensor, got {getattr(adj, 'shape', type(adj))}")
    if not torch.isfinite(adj).all():
        raise ValueError("adjacency contains NaN or Inf")
    from torch_geometric.data import Data

    edge_index = (adj != 0).nonzero().T
    return Data(edge_index=edge_index, edge_weight=adj[edge_index[0], edge_index[1]], num_nodes=adj.shape[0])
