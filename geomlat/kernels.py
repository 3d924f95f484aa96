"""Similarity kernels shared by LGGs (:mod:`geomlat.graphs`) and NNK graphs (:mod:`geomlat.nnk`), as a registry
users extend by decorator (like :func:`geomlat.distances.register_distance`).

A kernel is an object with the attributes of :class:`Kernel` (subclass it to inherit the defaults):

- ``prepare(x)``: (N, d) -> (N, d') points whose Gram matrix determines the kernel (unit rows for cosine);
- ``from_gram(g, sigma)``: kernel values (..., m, m) from the Gram matrices (..., m, m) of prepared points,
  differentiable (the distances are ``g_ii + g_jj - 2 g_ij``); ``from_gram_`` the same in place (NNK's blocks);
- ``similarity(x, sigma, k)``: the dense (B, B) matrix of an LGG; default ``from_gram(gram(prepare(x)))``;
- ``needs_nonnegative``: LGGs reject data with negative entries (cosine: its weights would be negative);
  NNK only needs a positive semi-definite kernel and ignores it;
- ``knn_metric``: ``"cosine"`` or ``"euclidean"``, the k-NN metric whose nearest points are the most
  similar (NNK's candidates);
- ``uses_sigma`` and ``bandwidth(kth)``: whether the kernel has a bandwidth and the rule that estimates it
  from the (N,) distances of the points to their k-th nearest neighbor (default: their mean / 3, the
  authors' rule) when ``sigma`` is None.

Built-in: ``"cosine"``, ``"cosine_shifted"`` (0.5 + 0.5 cos) and ``"rbf"`` ``exp(-|x_i - x_j|^2 / (2 sigma^2))``.
LGGs also accept ``"auto"`` (cosine for non-negative data, else RBF), which is not a kernel.

This module also holds the numerics of the built-in kernels (:func:`gram`, :func:`cosine_gram`,
:func:`squared_distances`, :func:`estimate_sigma`, the overflow rescaling of :func:`row_scales` and
:func:`batch_scale`).

Example (a Laplacian kernel ``exp(-|x_i - x_j| / sigma)``):
    >>> @register_kernel("laplacian_example")
    ... class Laplacian(Kernel):
    ...     uses_sigma = True
    ...     def from_gram(self, g, sigma):
    ...         return torch.exp(-distances_from_gram(g, squared=False) / sigma)
    >>> from geomlat import latent_graph, nnk_graph
    >>> x = torch.randn(20, 5)
    >>> latent_graph(x, k=3, kernel="laplacian_example", sigma=1.0).num_nodes
    20
    >>> bool((nnk_graph(x, k=4, kernel="laplacian_example").edge_weight > 0).all())
    True
    >>> _ = KERNELS.unregister("laplacian_example")  # leave the registry as it was
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import checks_deferred, full_precision, value_check
from .registry import Registry

#: Default number of neighbors used to estimate a bandwidth when the LGG is full (``k=None``).
SIGMA_NEIGHBORS = 10


# --------------------------------------------------------------------------------------- numerics
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


def norms_in_range(sq_norms: Tensor, x: Tensor, per_row: bool) -> Tensor:
    """0-dim bool tensor, read nowhere: the (B,) squared row norms of ``x`` (B, d) neither overflowed nor lost
    precision to underflow (the test of :func:`norms_out_of_range`, on the device; one extra reduction
    pass over ``x`` for the rows whose squared norm underflowed to 0)."""
    sq = sq_norms.detach()
    info = torch.finfo(sq.dtype)
    floor = info.tiny**0.5
    top = sq.max()
    ok = torch.isfinite(top) & (top <= info.max / 8)
    if not per_row:
        largest = torch.linalg.vector_norm(x.detach(), ord=float("inf"))
        underflow = ((top > 0) & (top < floor)) | ((top == 0) & (largest > 0))
    else:
        nonzero = sq > 0
        row_max = torch.linalg.vector_norm(x.detach(), ord=float("inf"), dim=1)
        # a squared norm of 0 for a row with non-zero entries is underflow too
        underflow = ((sq < floor) & nonzero).any() | ((row_max > 0) & ~nonzero).any()
    return ok & ~underflow


def norms_out_of_range(sq_norms: Tensor, x: Tensor, per_row: bool) -> bool:
    """Whether the (B,) squared row norms of ``x`` overflowed or lost precision to underflow.

    Safe: every squared norm finite and at most ``finfo.max / 8`` (so sums of a few of them stay finite),
    and (``per_row``) every non-zero one at least ``sqrt(finfo.tiny)`` (products of the significant entries
    stay normal numbers) or (batch) the largest one so; a zero squared norm of a non-zero row is underflow.

    Inside :func:`geomlat.checks.deferred_value_checks` (the training engine) nothing is read on the host:
    the test is recorded as a deferred check, which raises a ``ValueError`` naming the overflow when the
    engine verifies its checks, and ``False`` is returned (no rescaling). Outside, the caller rescales.
    """
    if sq_norms.device.type == "meta":  # shapes only: no value to test
        return False
    if checks_deferred():
        value_check(norms_in_range(sq_norms, x, per_row),
                    f"the squared norms of features of shape {tuple(x.shape)} overflow or underflow "
                    f"{x.dtype} (outside [sqrt(tiny), max / 8]); geomlat rescales them exactly outside "
                    "deferred_value_checks (the engine's mode): scale the features, or use float64")
        return False
    # immediate mode: host reads, but x itself is only looked at where a squared norm is 0
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


def distances_from_gram(g: Tensor, squared: bool = True) -> Tensor:
    """(..., m, m) squared distances ``G_ii + G_jj - 2 G_ij`` (clamped at 0) of (..., m, m) Gram matrices.

    ``squared=False``: the distances, whose gradient at a zero distance (the diagonal) is 0 instead of the
    NaN of ``sqrt``'s infinite derivative there.
    """
    sq = g.diagonal(dim1=-2, dim2=-1)
    d2 = (sq[..., :, None] + sq[..., None, :] - 2.0 * g).clamp_min(0.0)
    return d2 if squared else _safe_sqrt(d2)


def _safe_sqrt(d2: Tensor) -> Tensor:
    """sqrt of non-negative values with 0 (and a zero gradient) at 0."""
    # sqrt only of positive values: the clamp never moves one, it only keeps the unused branch finite
    return torch.where(d2 > 0, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), torch.zeros_like(d2))


@full_precision
def squared_distances(x: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances of the rows of ``x`` (B, d) -> (B, B), from one Gram matrix.

    Computed as is: inputs whose squared norms overflow give inf (see :func:`batch_scale`).
    """
    return distances_from_gram(gram(x))


def kth_neighbor_distances(sq_dist: Tensor, k: int | None = None) -> Tensor:
    """(B,) distance of every sample to its k-th nearest other sample, from (B, B) squared distances.

    ``k=None`` uses ``min(SIGMA_NEIGHBORS, B - 1)``. Differentiable; a zero distance contributes 0 and no
    gradient (the derivative of the square root at 0 is not taken).
    """
    b = sq_dist.shape[0]
    kk = min(SIGMA_NEIGHBORS, b - 1) if k is None else k
    off_diag = sq_dist.masked_fill(torch.eye(b, dtype=torch.bool, device=sq_dist.device), float("inf"))
    return _safe_sqrt(off_diag.topk(kk, dim=1, largest=False).values[:, -1])


def mean_bandwidth(kth: Tensor) -> Tensor:
    """The authors' bandwidth rule: mean of the (N,) k-th neighbor distances / 3; 1 when that is 0 (all
    samples coincide: every weight is then exp(0) = 1 whatever the bandwidth). Returns a scalar tensor."""
    sigma = kth.mean() / 3.0
    return torch.where(sigma > 0, sigma, torch.ones_like(sigma))


def estimate_sigma(sq_dist: Tensor, k: int | None = None) -> Tensor:
    """RBF bandwidth rule of the authors' code: mean distance to the k-th nearest neighbor, divided by 3.

    ``k=None`` uses ``min(SIGMA_NEIGHBORS, B - 1)`` neighbors. If every sample coincides (the estimate is
    0) the bandwidth is 1: all weights are then exp(0) = 1 whatever the bandwidth. The estimate is a
    differentiable function of the distances; a zero distance contributes 0 and no gradient (the
    derivative of the square root at 0 is not taken).

    Args:
        sq_dist: (B, B) squared distances.
    Returns:
        scalar tensor.
    """
    return mean_bandwidth(kth_neighbor_distances(sq_dist, k))


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


# --------------------------------------------------------------------------------------- protocol
class Kernel:
    """A similarity kernel (see the module docstring); subclass it and define at least :meth:`from_gram`.

    Attributes:
        name: the registered name (set by :func:`register_kernel`).
        needs_nonnegative: LGGs reject data with negative entries.
        knn_metric: ``"cosine"`` or ``"euclidean"``: the k-NN metric that ranks the most similar points first.
        uses_sigma: the kernel has a bandwidth ``sigma`` (estimated by :meth:`bandwidth` when not given).
    """

    name: str = ""
    needs_nonnegative: bool = False
    knn_metric: str = "euclidean"
    uses_sigma: bool = False

    def prepare(self, x: Tensor) -> Tensor:
        """(N, d) -> (N, d') points whose Gram matrix :meth:`from_gram` reads (default: ``x`` itself)."""
        return x

    def from_gram(self, g: Tensor, sigma: float | Tensor | None) -> Tensor:
        """(..., m, m) kernel values from (..., m, m) Gram matrices of prepared points (not modified)."""
        raise NotImplementedError(f"kernel {self.name!r} defines no from_gram(g, sigma)")

    def from_gram_(self, g: Tensor, sigma: float | Tensor | None) -> Tensor:
        """:meth:`from_gram` written into ``g`` (no autograd), returned; override to avoid the temporary."""
        return g.copy_(self.from_gram(g, sigma))

    def bandwidth(self, kth: Tensor) -> Tensor:
        """Scalar bandwidth from the (N,) distances of the points to their k-th nearest neighbor
        (default :func:`mean_bandwidth`, the authors' rule)."""
        return mean_bandwidth(kth)

    def similarity(self, x: Tensor, sigma: float | Tensor | None = None, k: int | None = None) -> Tensor:
        """Dense (B, B) similarities of the rows of a checked (B, d) ``x``, differentiable; ``k`` only serves
        the bandwidth estimate (:func:`kth_neighbor_distances`). Default: ``from_gram(gram(prepare(x)))``."""
        g = gram(self.prepare(x))
        if self.uses_sigma and sigma is None:
            sigma = self.bandwidth(kth_neighbor_distances(distances_from_gram(g), k))
        return self.from_gram(g, sigma)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


#: Registered kernels by name (:func:`register_kernel`).
_REQUIRED = ("prepare", "from_gram", "from_gram_", "bandwidth", "similarity", "needs_nonnegative", "knn_metric", "uses_sigma")


def _check_kernel(name: str, kernel: Kernel) -> None:
    missing = [a for a in _REQUIRED if not hasattr(kernel, a)]
    if missing:
        raise TypeError(f"kernel {name!r} lacks {missing}: subclass geomlat.kernels.Kernel")
    if kernel.knn_metric not in ("cosine", "euclidean"):
        raise ValueError(f"kernel {name!r}: knn_metric must be 'cosine' or 'euclidean', got {kernel.knn_metric!r}")


#: name -> kernel instance (:func:`register_kernel` adds to it).
KERNELS: Registry[Kernel] = Registry("kernel", check=_check_kernel)


def register_kernel(name: str):
    """Decorator registering a kernel under ``name``: a :class:`Kernel` subclass (instantiated without
    arguments) or an instance of one (any object with the attributes of :class:`Kernel`). Returns the
    decorated object; ``ValueError`` for a name taken or ``"auto"`` (the automatic choice of
    :func:`geomlat.graphs.latent_adjacency`), ``TypeError`` for an object that is not a kernel."""

    def decorator(obj):
        if not isinstance(name, str) or not name or name == "auto":
            raise ValueError(f"a kernel name must be a non-empty string other than 'auto', got {name!r}")
        if name in KERNELS:  # before instantiating the class
            raise ValueError(f"kernel {name!r} is already registered")
        kernel = obj() if isinstance(obj, type) else obj
        KERNELS.register(name, kernel)
        kernel.name = name
        return obj

    return decorator


def get_kernel(name: str) -> Kernel:
    """The registered kernel called ``name``; :class:`geomlat.registry.UnknownNameError` (a ``ValueError``)
    listing the registered names otherwise."""
    return KERNELS[name]


def kernel_names() -> tuple[str, ...]:
    """Names of the registered kernels, sorted."""
    return tuple(sorted(KERNELS))


# --------------------------------------------------------------------------------------- built-ins
@register_kernel("cosine")
class CosineKernel(Kernel):
    """``<u_i, u_j>`` of the unit rows; LGGs need non-negative data (weights in [0, 1]); PSD for any sign."""

    needs_nonnegative = True
    knn_metric = "cosine"

    def prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1, eps=1e-12)

    def from_gram(self, g: Tensor, sigma=None) -> Tensor:
        return g

    def from_gram_(self, g: Tensor, sigma=None) -> Tensor:
        return g

    def similarity(self, x: Tensor, sigma=None, k=None) -> Tensor:
        return cosine_gram(x)


@register_kernel("cosine_shifted")
class ShiftedCosineKernel(CosineKernel):
    """``0.5 + 0.5 cos``, in [0, 1] for any sign (the authors' NNK code)."""

    needs_nonnegative = False

    def from_gram(self, g: Tensor, sigma=None) -> Tensor:
        return g * 0.5 + 0.5

    def from_gram_(self, g: Tensor, sigma=None) -> Tensor:
        return g.mul_(0.5).add_(0.5)

    def similarity(self, x: Tensor, sigma=None, k=None) -> Tensor:
        return 0.5 + 0.5 * cosine_gram(x)


@register_kernel("rbf")
class RBFKernel(Kernel):
    """``exp(-|x_i - x_j|^2 / (2 sigma^2))``; bandwidth by the authors' rule (:func:`estimate_sigma`)."""

    uses_sigma = True

    def from_gram(self, g: Tensor, sigma) -> Tensor:
        sq = g.diagonal(dim1=-2, dim2=-1)
        return (g * -2.0 + sq[..., :, None] + sq[..., None, :]).clamp(min=0.0).div(-2.0 * sigma**2).exp()

    def from_gram_(self, g: Tensor, sigma) -> Tensor:
        sq = g.diagonal(dim1=-2, dim2=-1).clone()
        return g.mul_(-2.0).add_(sq[..., :, None]).add_(sq[..., None, :]).clamp_(min=0.0).div_(-2.0 * sigma**2).exp_()

    def similarity(self, x: Tensor, sigma=None, k=None) -> Tensor:
        """With the overflow rescaling of the module docstring of :mod:`geomlat.graphs`."""
        g = gram(x)
        if norms_out_of_range(g.diagonal(), x, per_row=False):
            # |x_i - x_j|^2 / sigma^2 is unchanged when x and sigma are divided by the same factor, and the
            # estimated sigma scales with x: compute in units of the batch's scale
            scale = batch_scale(x)
            x = x / scale
            if sigma is not None:
                sigma = sigma / scale
            g = gram(x)
        sq_dist = distances_from_gram(g)
        if sigma is None:
            sigma = estimate_sigma(sq_dist, k)
        # a (rescaled) sigma^2 below the smallest normal float would give 0 / 0 on the diagonal
        two_var = 2.0 * sigma**2
        tiny = torch.finfo(sq_dist.dtype).tiny
        two_var = two_var.clamp_min(tiny) if torch.is_tensor(two_var) else max(two_var, tiny)
        return torch.exp(-sq_dist / two_var)
