"""Representation similarity: the standard measures behind one function, and their chance level.

``representation_similarity(x, y, measure, **options)`` compares x (N, d1) and y (N, d2), the features of
the same N inputs ((N, ...) is flattened; token features (N, T, H) follow :mod:`geomlat.sequences`: pass
``attention_mask=`` and ``reduce=``). Every measure is one function registered with
:func:`register_similarity`, which records whether it is a similarity or a distance and its range:

============================  ==========  ====================  =========================================
measure                       kind        range                 reference
============================  ==========  ====================  =========================================
``linear_cka`` (``cka``)      similarity  [0, 1]                platonic-rep ``AlignmentMetrics.cka``
``unbiased_cka``              similarity  about [-1, 1]         platonic-rep ``unbiased_cka``
``rbf_cka``                   similarity  [0, 1]                platonic-rep ``cka(kernel_metric="rbf")``
``mutual_knn``                similarity  [0, 1]                platonic-rep ``mutual_knn``
``cycle_knn``                 similarity  [0, 1]                platonic-rep ``cycle_knn``
``lcs_knn``                   similarity  [0, topk]             platonic-rep ``lcs_knn``
``edit_distance_knn``         similarity  [0, 1]                platonic-rep ``edit_distance_knn``
``cknna``                     similarity  about [-1, 1]         platonic-rep ``cknna``
``svcca``                     similarity  [0, 1]                platonic-rep ``svcca``
``procrustes``                distance    [0, pi/2] radians     netrep ``LinearMetric(alpha=1)``, angular
``cca``                       distance    [0, pi/2] radians     netrep ``LinearMetric(alpha=0)``, angular
``rsa``                       similarity  [-1, 1]               Spearman of 1 - Pearson RDMs
``lgg``                       similarity  [0, 1] (>= 0 graphs)  geomlat's LGG similarity
``knn_overlap``               similarity  [0, 1]                ``mutual_knn`` on cosine neighbors
============================  ==========  ====================  =========================================

Conventions shared with platonic-rep (``minyoungg/platonic-rep``, ``metrics.py``): options ``topk`` (default
10, the default of its pipeline), ``sigma`` (its ``rbf_sigma``, default 1.0) and ``cca_dim`` (default 10);
neighbors are the largest inner products (self excluded); the CKA-type ratios add ``eps=1e-6`` to their
denominator as it does. Rows are *not* scaled to unit length unless ``normalize=True``: platonic-rep's
``metrics.py`` takes the features as given, its pipeline (``measure_alignment.compute_score``) scales every
row to unit L2 norm first, so ``normalize=True`` reproduces the pipeline (whose features are also clamped
at their 95% quantile beforehand, which is left to the caller). All values are computed in float64.

:func:`similarity_null` gives the chance level of a score: the scores of y with its rows shuffled.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..graphs import latent_adjacency
from ..registry import Registry
from ..sequences import sample_vectors
from . import _similarity_math as M

KINDS = ("similarity", "distance")


@dataclass(frozen=True)
class SimilarityMeasure:
    """A registered measure: ``fn(x, y, **options) -> float`` on (N, d1), (N, d2) float tensors.

    Attributes:
        kind: ``"similarity"`` (larger = more alike) or ``"distance"`` (smaller = more alike).
        range: the range in words (e.g. ``"[0, 1]"``, ``"[0, pi/2] rad"``), for labels.
        bounds: (low, high) for color scales, or None when the range depends on the options.
    """

    name: str
    fn: Callable[..., float]
    kind: str
    range: str
    bounds: tuple[float, float] | None

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the keyword options of ``fn`` (its parameters after x and y)."""
        return tuple(list(inspect.signature(self.fn).parameters)[2:])

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind}, {self.range})"

    def __call__(self, x: Tensor, y: Tensor, **options) -> float:
        return float(self.fn(x, y, **options))


def _check_measure(name: str, entry: SimilarityMeasure) -> None:
    if entry.kind not in KINDS:
        raise ValueError(f"similarity measure {name!r}: kind must be one of {KINDS}, got {entry.kind!r}")
    if len(inspect.signature(entry.fn).parameters) < 2:
        raise ValueError(f"similarity measure {name!r}: fn must take (x, y, **options)")


#: Every measure of :func:`representation_similarity`, by name.
SIMILARITIES: Registry[SimilarityMeasure] = Registry("similarity measure", check=_check_measure)


def register_similarity(name: str, fn: Callable | None = None, *, kind: str = "similarity", range: str = "[0, 1]",
                        bounds: tuple[float, float] | None = (0.0, 1.0), replace: bool = False):
    """Register ``fn(x, y, **options) -> float`` as measure ``name``; usable as a decorator (returns ``fn``).

    ``x`` (N, d1) and ``y`` (N, d2) arrive as checked, finite float tensors of the same N. ``kind`` is
    ``"similarity"`` or ``"distance"`` (it sets the side of :func:`similarity_null`'s p-value).
    """
    def add(f: Callable) -> Callable:
        SIMILARITIES.register(name, SimilarityMeasure(name, f, kind, range, bounds), replace=replace)
        return f
    return add if fn is None else add(fn)


# ---------------------------------------------------------------------------------------------- input
def pair_vectors(x: Tensor, y: Tensor, attention_mask=None, reduce: str | None = None) -> tuple[Tensor, Tensor]:
    """(N, d1), (N, d2) detached float vectors of the features ``x``, ``y`` of the same N inputs.

    ``attention_mask``: None, one (N, T) mask for both, or a pair ``(mask_x, mask_y)`` (None for a side that
    is not a token sequence); ``reduce`` as :func:`geomlat.sequences.sample_vectors`. Raises ValueError for
    different N, fewer than 2 rows, or a non-finite value.
    """
    mx, my = attention_mask if isinstance(attention_mask, (tuple, list)) else (attention_mask, attention_mask)
    out = []
    for t, mask, what in ((x, mx, "x"), (y, my, "y")):
        v = sample_vectors(t, mask, reduce, what=what).detach()
        v = v.float() if not v.is_floating_point() or v.element_size() < 4 else v
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{what} holds NaN or infinite values")
        out.append(v)
    a, b = out
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must describe the same inputs, got {a.shape[0]} and {b.shape[0]} rows")
    if a.shape[0] < 2:
        raise ValueError(f"comparing representations needs at least 2 inputs, got {a.shape[0]}")
    return a, b


def _options_for(m: SimilarityMeasure, options: dict) -> dict:
    unknown = sorted(set(options) - set(m.options))
    if unknown:
        raise TypeError(f"measure {m.name!r} takes the options {list(m.options)}, got unknown {unknown}")
    return options


def representation_similarity(x: Tensor, y: Tensor, measure: str, *, attention_mask=None, reduce: str | None = None,
                              **options) -> float:
    """Score of ``measure`` (a name of :data:`SIMILARITIES`) between x (N, ...) and y (N, ...).

    Args:
        x, y: features of the same N inputs; (N, ...) flattened, (N, T, H) with ``attention_mask``.
        measure: see the module docstring (``list(SIMILARITIES)``).
        attention_mask, reduce: as :func:`pair_vectors`.
        options: the measure's options (e.g. ``topk=10``, ``sigma=1.0``, ``cca_dim=10``, ``normalize=True``).

    Example:
        >>> x = torch.randn(100, 16)
        >>> round(representation_similarity(x, 2 * x, "linear_cka"), 6)
        1.0
    """
    m = SIMILARITIES[measure]
    a, b = pair_vectors(x, y, attention_mask, reduce)
    return m(a, b, **_options_for(m, options))


# ---------------------------------------------------------------------------------------------- null
@dataclass
class SimilarityNull:
    """A score and its permutation null: the scores of (x, y[perm]) for random row permutations.

    ``p_value = (1 + #{null at least as extreme}) / (1 + n_permutations)``: "extreme" is ``>= score`` for a
    similarity, ``<= score`` for a distance. ``null_std`` is the sample standard deviation (ddof 1).
    """

    measure: str
    kind: str
    score: float
    null_mean: float
    null_std: float
    p_value: float
    null: Tensor = field(repr=False)

    def calibrated(self, how: str = "difference") -> float:
        """``"difference"``: score - null_mean (0 at chance, units of the measure); ``"zscore"``:
        (score - null_mean) / null_std. For a distance, a value below 0 means closer than chance."""
        if how == "difference":
            return self.score - self.null_mean
        if how == "zscore":
            if not self.null_std > 0:
                raise ValueError(f"the z-score of {self.measure!r} is undefined: its null has zero spread")
            return (self.score - self.null_mean) / self.null_std
        raise ValueError(f"how must be 'difference' or 'zscore', got {how!r}")


CALIBRATIONS = ("difference", "zscore")


def null_of(m: SimilarityMeasure, a: Tensor, b: Tensor, n_permutations: int, seed: int, options: dict) -> SimilarityNull:
    """:class:`SimilarityNull` of measure ``m`` on prepared vectors (see :func:`similarity_null`)."""
    if not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations must be a positive integer, got {n_permutations!r}")
    score = m(a, b, **options)
    gen = torch.Generator().manual_seed(seed)
    null = torch.tensor([m(a, b[torch.randperm(b.shape[0], generator=gen, device="cpu").to(b.device)], **options)
                         for _ in range(n_permutations)], dtype=torch.float64, device="cpu")
    extreme = null >= score if m.kind == "similarity" else null <= score
    p = (1 + int(extreme.sum())) / (1 + n_permutations)
    std = float(null.std()) if n_permutations > 1 else 0.0
    return SimilarityNull(m.name, m.kind, score, float(null.mean()), std, p, null)


def similarity_null(x: Tensor, y: Tensor, measure: str, n_permutations: int = 100, seed: int = 0, *,
                    attention_mask=None, reduce: str | None = None, **options) -> SimilarityNull:
    """Score of ``measure`` between x and y with its chance level: ``n_permutations`` scores of x against y
    with its rows shuffled (``torch.randperm`` from ``seed``), which breaks the pairing of inputs and keeps
    each representation's geometry.

    Returns:
        :class:`SimilarityNull` (``score``, ``null_mean``, ``null_std``, ``p_value``, the ``null`` scores).
    """
    m = SIMILARITIES[measure]
    a, b = pair_vectors(x, y, attention_mask, reduce)
    return null_of(m, a, b, n_permutations, seed, _options_for(m, options))


# ---------------------------------------------------------------------------------------------- CKA family
def _unit(x: Tensor, normalize: bool) -> Tensor:
    return F.normalize(x, dim=1, eps=1e-12) if normalize else x


@register_similarity("linear_cka")
def linear_cka(x: Tensor, y: Tensor, unbiased: bool = False, normalize: bool = False, eps: float = 1e-6) -> float:
    """Linear CKA (Kornblith et al. 2019): ``HSIC(K, L) / (sqrt(HSIC(K, K) HSIC(L, L)) + eps)``, K = x x^T,
    L = y y^T. Similarity in [0, 1] (biased HSIC; ``unbiased=True``: Song et al.'s estimator, about [-1, 1]).

    As platonic-rep's ``AlignmentMetrics.cka`` (``kernel_metric="ip"``). Computed in feature space
    (``|x^T y|_F^2``) or by row blocks of the Gram matrices, never an (N, N) matrix.
    """
    a, b = _unit(x.double(), normalize), _unit(y.double(), normalize)
    mk, ml, kl, kk, ll = M.linear_gram_moments(a, b)
    return M.cka_ratio(M.hsic(mk, ml, kl, unbiased), M.hsic(mk, mk, kk, unbiased), M.hsic(ml, ml, ll, unbiased),
                       eps, "CKA")


register_similarity("cka", linear_cka)  # platonic-rep's name of the same measure


@register_similarity("unbiased_cka", range="about [-1, 1]", bounds=(-1.0, 1.0))
def unbiased_cka(x: Tensor, y: Tensor, normalize: bool = False, eps: float = 1e-6) -> float:
    """Linear CKA with the unbiased HSIC (Song et al. 2012), platonic-rep's ``unbiased_cka``. Similarity,
    about [-1, 1] (0 in expectation for independent representations)."""
    return linear_cka(x, y, unbiased=True, normalize=normalize, eps=eps)


@register_similarity("rbf_cka")
def rbf_cka(x: Tensor, y: Tensor, sigma: float = 1.0, unbiased: bool = False, normalize: bool = False,
            eps: float = 1e-6) -> float:
    """CKA with RBF kernels ``exp(-|x_i - x_j|^2 / (2 sigma^2))`` (platonic-rep ``cka(kernel_metric="rbf",
    rbf_sigma=sigma)``). Similarity in [0, 1]. Kernels built by row blocks: one (c, N) block of each at a time."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    a, b = _unit(x.double(), normalize), _unit(y.double(), normalize)
    mk, ml, kl, kk, ll = M.kernel_moments(a, b, M.rbf_block(sigma))
    return M.cka_ratio(M.hsic(mk, ml, kl, unbiased), M.hsic(mk, mk, kk, unbiased), M.hsic(ml, ml, ll, unbiased),
                       eps, "RBF CKA")


# ---------------------------------------------------------------------------------------------- k-NN family
def _neighbors(x: Tensor, y: Tensor, topk: int, normalize: bool) -> tuple[Tensor, Tensor]:
    """(N, topk) inner-product neighbor lists of x and y, nearest first (platonic-rep's
    ``compute_nearest_neighbors``), by the library's exact chunked search."""
    if not isinstance(topk, int) or isinstance(topk, bool):
        raise TypeError(f"topk must be an int, got {topk!r}")
    return M.knn_lists(_unit(x, normalize), topk), M.knn_lists(_unit(y, normalize), topk)


@register_similarity("mutual_knn")
def mutual_knn(x: Tensor, y: Tensor, topk: int = 10, normalize: bool = False) -> float:
    """Mean over inputs of ``|N_x(i) ∩ N_y(i)| / topk`` (platonic-rep ``mutual_knn``). Similarity in [0, 1]."""
    na, nb = _neighbors(x, y, topk, normalize)
    shared = (na[:, :, None] == nb[:, None, :]).any(-1).sum(1)
    return float(shared.double().mean() / topk)


@register_similarity("knn_overlap")
def knn_overlap(x: Tensor, y: Tensor, k: int = 10) -> float:
    """Mean fraction of shared cosine k-NN: ``mutual_knn(topk=k, normalize=True)`` (geomlat's earlier name).
    Similarity in [0, 1]."""
    return mutual_knn(x, y, topk=k, normalize=True)


@register_similarity("cycle_knn")
def cycle_knn(x: Tensor, y: Tensor, topk: int = 10, normalize: bool = False) -> float:
    """Fraction of inputs i found among the x-neighbors of one of their y-neighbors (platonic-rep
    ``cycle_knn``: ``knn_x[knn_y]`` contains i). Similarity in [0, 1]; not symmetric in (x, y)."""
    na, nb = _neighbors(x, y, topk, normalize)
    own = torch.arange(na.shape[0], device=na.device)[:, None, None]
    return float((na[nb] == own).flatten(1).any(1).double().mean())


@register_similarity("lcs_knn", range="[0, topk]", bounds=None)
def lcs_knn(x: Tensor, y: Tensor, topk: int = 10, normalize: bool = False) -> float:
    """Mean length of the longest common subsequence of the ordered neighbor lists (platonic-rep
    ``lcs_knn``, not divided by topk). Similarity in [0, topk]."""
    na, nb = _neighbors(x, y, topk, normalize)
    return float(M.lcs_lengths(na, nb).double().mean())


@register_similarity("edit_distance_knn")
def edit_distance_knn(x: Tensor, y: Tensor, topk: int = 10, normalize: bool = False) -> float:
    """``1 - mean Levenshtein distance / topk`` of the ordered neighbor lists (platonic-rep
    ``edit_distance_knn``). Similarity in [0, 1]."""
    na, nb = _neighbors(x, y, topk, normalize)
    return float(1.0 - M.edit_distances(na, nb).double().mean() / topk)


def _top_with_self(x: Tensor, topk: int) -> Tensor:
    """(N, topk) largest inner products of each row over all rows, self included: the top-k of a full row
    lies among self and the top-k of the others."""
    n = x.shape[0]
    others = M.knn_lists(x, topk)
    cand = torch.cat([torch.arange(n, device=x.device)[:, None], others], dim=1)
    score = (x[:, None, :] * x[cand]).sum(-1)
    return cand.gather(1, score.topk(topk, dim=1).indices)


def _masked_hsic(x: Tensor, y: Tensor, na: Tensor, nb: Tensor, unbiased: bool) -> Tensor:
    """HSIC(mask * K, mask * L), mask the entries (i, j) with j in both lists na[i] and nb[i]."""
    n, k = na.shape
    keep = (na[:, :, None] == nb[:, None, :]).any(-1)
    i = torch.arange(n, device=x.device)[:, None].expand(n, k)[keep]
    j = na[keep]
    a, b = (x[i] * x[j]).sum(1), (y[i] * y[j]).sum(1)
    return M.hsic(M.sparse_moments(i, j, a, n), M.sparse_moments(i, j, b, n), M.sparse_cross(i, j, a, b, n), unbiased)


@register_similarity("cknna", range="about [-1, 1]", bounds=(-1.0, 1.0))
def cknna(x: Tensor, y: Tensor, topk: int = 10, unbiased: bool = True, normalize: bool = False,
          eps: float = 1e-6) -> float:
    """CKNNA (platonic-rep ``cknna``): CKA of the linear kernels restricted to the pairs that are mutual
    top-k neighbors (``unbiased=True``: self excluded, unbiased HSIC; ``False``: self may be a neighbor,
    biased HSIC). Similarity, about [-1, 1]. Works on the N * topk mask entries, no (N, N) matrix."""
    if not isinstance(topk, int) or topk < 2:
        raise ValueError(f"CKNNA needs topk >= 2, got {topk!r}")
    a, b = _unit(x.double(), normalize), _unit(y.double(), normalize)
    lists = (lambda v: M.knn_lists(v, topk)) if unbiased else (lambda v: _top_with_self(v, topk))
    na, nb = lists(a), lists(b)
    return M.cka_ratio(_masked_hsic(a, b, na, nb, unbiased), _masked_hsic(a, a, na, na, unbiased),
                       _masked_hsic(b, b, nb, nb, unbiased), eps, "CKNNA")


# ---------------------------------------------------------------------------------------------- subspaces
@register_similarity("svcca")
def svcca(x: Tensor, y: Tensor, cca_dim: int = 10, normalize: bool = False) -> float:
    """SVCCA (Raghu et al. 2017; platonic-rep ``svcca``): standardize each column (``(v - mean) / (std +
    1e-8)``), keep the top ``cca_dim`` left singular vectors U_x, U_y, return the mean canonical correlation
    between them (the singular values of ``U_x^T U_y``). Similarity in [0, 1].

    platonic-rep finds U with the randomized ``torch.svd_lowrank`` and the correlations with scikit-learn's
    iterative CCA; here both are exact (equal to it where its randomized SVD is exact).
    """
    def top_left(v: Tensor, what: str) -> Tensor:
        v = _unit(v.double(), normalize)
        v = v - v.mean(0)
        v = v / (v.std(0) + 1e-8)
        u, s, _ = torch.linalg.svd(v, full_matrices=False)
        if cca_dim > s.numel() or not s[cca_dim - 1] > 1e-10 * s[0]:
            raise ValueError(f"svcca: cca_dim = {cca_dim} exceeds the rank of {what} (shape {tuple(v.shape)})")
        return u[:, :cca_dim]

    if not isinstance(cca_dim, int) or cca_dim < 1:
        raise ValueError(f"cca_dim must be a positive integer, got {cca_dim!r}")
    corr = torch.linalg.svdvals(top_left(x, "x").T @ top_left(y, "y"))
    return float(corr.clamp(max=1.0).mean())


def _aligned_angle(a: Tensor, b: Tensor) -> float:
    """netrep's angular distance after the optimal rotation: ``arccos(|a^T b|_* / (|a|_F |b|_F))``."""
    den = a.norm() * b.norm()
    if not float(den) > 0:
        raise ValueError("the angular distance is undefined for a constant representation")
    return math.acos(min(1.0, float(torch.linalg.svdvals(a.T @ b).sum() / den)))


@register_similarity("procrustes", kind="distance", range="[0, pi/2] rad", bounds=(0.0, math.pi / 2))
def procrustes(x: Tensor, y: Tensor) -> float:
    """Orthogonal Procrustes angular distance (netrep ``LinearMetric(alpha=1, score_method="angular")``): the
    angle ``arccos(<x_c Q, y_c>_F / (|x_c|_F |y_c|_F))`` for the best rotation Q of the centered features
    (zero-padded to a common width). Distance in radians, [0, pi/2]; 0 iff y_c = s x_c Q."""
    a, b = x.double(), y.double()
    return _aligned_angle(a - a.mean(0), b - b.mean(0))


@register_similarity("cca", kind="distance", range="[0, pi/2] rad", bounds=(0.0, math.pi / 2))
def cca(x: Tensor, y: Tensor) -> float:
    """CCA angular distance (netrep ``LinearMetric(alpha=0, score_method="angular")``): the Procrustes angle
    of the whitened centered features, ``arccos(sum of canonical correlations / sqrt(d_x d_y))`` for full-rank
    features (eigenvalues of ``x_c^T x_c`` clipped at 1e-7 as netrep does). Distance in radians, [0, pi/2]."""
    a, b = x.double(), y.double()
    return _aligned_angle(M.partial_whiten(a - a.mean(0), 0.0), M.partial_whiten(b - b.mean(0), 0.0))


# ---------------------------------------------------------------------------------------------- graphs
def _rdm_upper(v: Tensor, what: str) -> Tensor:
    """Upper triangle (i < j, row-major) of the RDM ``1 - corr(v_i, v_j)`` (Pearson across features)."""
    c = v - v.mean(1, keepdim=True)
    norm = c.norm(dim=1, keepdim=True)
    if not bool((norm > 0).all()):
        raise ValueError(f"rsa: a row of {what} is constant (its correlation with the others is undefined)")
    c = c / norm
    iu = torch.triu_indices(v.shape[0], v.shape[0], 1, device=v.device)
    return 1.0 - (c[iu[0]] * c[iu[1]]).sum(1)


@register_similarity("rsa", range="[-1, 1]", bounds=(-1.0, 1.0))
def rsa(x: Tensor, y: Tensor) -> float:
    """RSA (Kriegeskorte et al. 2008): Spearman correlation between the upper triangles of the two
    representational dissimilarity matrices ``1 - Pearson correlation`` of the inputs. Similarity in [-1, 1].
    Holds two vectors of N (N - 1) / 2 entries."""
    if x.shape[0] < 3:
        raise ValueError(f"rsa needs at least 3 inputs, got {x.shape[0]}")
    ra = M.average_ranks(_rdm_upper(x.double(), "x"))
    rb = M.average_ranks(_rdm_upper(y.double(), "y"))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = ra.norm() * rb.norm()
    if not float(den) > 0:
        raise ValueError("rsa is undefined: an RDM has all its entries equal")
    return float((ra @ rb) / den)


@register_similarity("lgg")
def lgg_similarity(x: Tensor, y: Tensor, graph_k: int | None = None, kernel: str = "auto") -> float:
    """Cosine similarity ``<A_x, A_y>_F / (|A_x|_F |A_y|_F)`` between the normalized LGGs ``D^-1/2 A D^-1/2``
    of the two representations (full graph by default, ``graph_k`` for k-NN graphs; no self-loops).
    Similarity in [0, 1] for non-negative weights, 1 iff the graphs are proportional."""
    a, _ = latent_adjacency(x.double(), k=graph_k, kernel=kernel, normalize="sym")
    b, _ = latent_adjacency(y.double(), k=graph_k, kernel=kernel, normalize="sym")
    den = a.norm() * b.norm()
    return float((a * b).sum() / den) if float(den) > 0 else 0.0
