"""Channel-wise NNK graphs (Bonet et al., ICASSP 2022 and APSIPA 2021; references [24], [26] of ``papers/004``).

A convolutional activation (N, C, ...) is the concatenation of C channels; channel c maps every sample to
its spatial map ``x[:, c]`` flattened to a vector of S = prod(...) values. Channel-wise NNK builds one NNK
graph per channel on those low-dimensional vectors (the same N samples in every graph) and measures:

- the leave-one-out NNK label interpolation error of each channel (:func:`channelwise_loo_errors`, the
  CW-DeepNNK generalization estimate);
- the overlap of two channels: how much their NNK neighborhoods of the same samples coincide
  (:func:`channel_overlap`);
- the channel-wise early-stopping rule on a history of channel errors (:class:`ChannelwiseEarlyStopping`,
  :func:`channelwise_early_stopping`).

The C graphs are solved in one call of the project's exact solver (:func:`geomlat.nnk.nnk_weights`): the
channels are stacked as C * N points of dimension S whose k-NN candidates (one :func:`geomlat.knn` search
per channel) stay inside their own channel, so the batched solver sees C * N independent nodes. For the RBF
kernel each channel gets its own bandwidth (the rule of :func:`geomlat.nnk.rbf_sigma` on that channel, as
a per-channel call would), applied by scaling the channel's points by 1 / sigma_c.

``convention="deepnnk"`` reproduces the authors' CW-DeepNNK code (``CW-DeepNNK_Early_Stopping``, ``main.py``
and ``utils/graph_utils.py::nnk_loo``; see :mod:`geomlat.nnk`): each channel's (pooled) map flattened, its k
nearest samples by L2 distance (the authors use k = 25) without the exact duplicates of the query, the shifted
cosine kernel (per-query bandwidth for RBF), weights normalized to sum 1, argmax; no aggregate over channels.
The weights are geomlat's exact NNK solution, not the authors' pruning heuristic.

A constant channel (every sample the same map, e.g. an all-zero channel after a ReLU) has no geometry: its
error only reflects how ties are broken, and a ``RuntimeWarning`` names it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Data

from .._checks import check_features, check_k, check_labels
from ..knn import knn
from ..kernels import get_kernel
from ..nnk import NNKOptions, NNKResult, nnk_loo_predictions, nnk_symmetrize, rbf_sigma
from .._params import check_int

#: Default number of stacked nodes (channels x samples) per solver call of :func:`channelwise_loo_errors`.
MAX_NODES = 200_000


def channel_maps(x: Tensor, name: str = "x") -> Tensor:
    """The per-channel vectors of an activation: (N, C, ...) -> (C, N, S), S = prod(...) (1 for (N, C)).

    Raises ValueError for fewer than 2 samples, no channel dimension, or NaN/Inf values.
    """
    if isinstance(x, Tensor) and x.dim() < 2:
        raise ValueError(f"{name} must have shape (N, C, ...) with a channel dimension, got shape {tuple(x.shape)}")
    check_features(x, name)
    n, c = x.shape[0], x.shape[1]
    if c == 0 or x[0, 0].numel() == 0:
        raise ValueError(f"{name} has no channel values, shape {tuple(x.shape)}")
    return x.detach().reshape(n, c, -1).transpose(0, 1)


@dataclass
class ChannelNNK:
    """Directed NNK solutions of C channel graphs over the same N samples.

    Attributes:
        neighbors: (C, N, k) long, the k-NN candidates of each sample in each channel (indices into the N
            samples, nearest first).
        weights: (C, N, k) NNK weights (0 where pruned), dtype of the input.
        residual: (C, N) float64 NNK residuals.
        kernel: the kernel; ``sigma``: (C,) float64 RBF bandwidths ((C, N) per query with ``"deepnnk"``; None for
            the cosine kernels).
        valid: (C, N, k) bool kept candidates (``"deepnnk"`` drops exact duplicates) or None (all).
        convention: ``"default"`` or ``"deepnnk"``.
    """

    neighbors: Tensor
    weights: Tensor
    residual: Tensor
    kernel: str
    sigma: Tensor | None = None
    valid: Tensor | None = None
    convention: str = "default"

    @property
    def mask(self) -> Tensor:
        """(C, N, k) bool: which candidates are NNK neighbors (theta > 0)."""
        return self.weights > 0

    @property
    def num_channels(self) -> int:
        return self.neighbors.shape[0]

    def channel(self, c: int) -> NNKResult:
        """The :class:`geomlat.nnk.NNKResult` of channel c ((N, k) neighbors and weights)."""
        sigma = None if self.sigma is None else self.sigma[c] if self.sigma.dim() == 2 else float(self.sigma[c])
        valid = None if self.valid is None else self.valid[c]
        return NNKResult(self.neighbors[c], self.weights[c], self.residual[c], self.kernel, sigma, valid, self.convention)

    def graph(self, c: int, edge_rule: str = "max") -> Data:
        """Symmetric NNK graph of channel c, as :func:`geomlat.nnk.nnk_graph` returns it for that channel alone:
        ``Data(edge_index (2, E), edge_weight (E,), num_nodes=N, residual (N,))``."""
        data = nnk_symmetrize(self.channel(c), edge_rule)
        data.residual = self.residual[c]
        return data


def _stacked(result: ChannelNNK) -> NNKResult:
    """The C graphs as one NNKResult over C * N nodes (channel c's node i is c * N + i)."""
    c, n, k = result.neighbors.shape
    offset = (torch.arange(c, device=result.neighbors.device) * n)[:, None, None]
    valid = None if result.valid is None else result.valid.reshape(c * n, k)
    return NNKResult((result.neighbors + offset).reshape(c * n, k), result.weights.reshape(c * n, k),
                     result.residual.reshape(c * n), result.kernel, valid=valid, convention=result.convention)


def _warn_constant(maps: Tensor, first: int = 0) -> None:
    """RuntimeWarning naming the channels of ``maps`` (C, N, S) whose N samples all have the same map."""
    const = (maps == maps[:, :1]).flatten(1).all(1)
    if bool(const.any()):
        names = (const.nonzero()[:, 0] + first).tolist()
        warnings.warn(f"channels {names} are constant (every sample has the same map, e.g. all zero): they have no "
                      "geometry and their NNK error only reflects how ties are broken", RuntimeWarning, stacklevel=3)


def channelwise_nnk(
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
) -> ChannelNNK:
    """One NNK graph per channel of an activation, all solved in one batched call of the exact solver.

    Args:
        x: (N, C, ...) activation; channel c's feature vector of sample i is ``x[i, c].flatten()`` (S values).
        k: k-NN candidates per sample and channel, ``1 <= k < N`` (the authors' CW-DeepNNK uses 25).
        kernel, sigma, tol, solver, approx_steps, node_chunk, convention: as :func:`geomlat.nnk.nnk_weights`
            (``kernel=None``: the convention's default; ``sigma=None`` with the RBF kernel: each channel's own
            bandwidth, :func:`geomlat.nnk.rbf_sigma`, or with ``convention="deepnnk"`` each query's).
        knn_backend, chunk_size: the k-NN search of each channel (:func:`geomlat.knn`; ``"chunked"`` bounds
            its memory to one (chunk_size, chunk_size) tile).
        neighbors: optional precomputed (C, N, k) candidate indices of every channel (self excluded).

    Returns:
        :class:`ChannelNNK` with (C, N, k) neighbors and weights, equal to C calls of
        :func:`geomlat.nnk.nnk_weights` on ``x[:, c].reshape(N, -1)``. Warns (RuntimeWarning) on constant channels.

    Memory: the C * N * S values in float64 (the kernel is computed in float64), C * N * k candidates and
    weights, and the solver's blocks (:data:`geomlat.nnk.SOLVE_BYTES`); the k-NN search runs one channel at a time.
    """
    options = NNKOptions.pick(locals())
    kernel, sigma = options.kernel_name, options.sigma
    kern = get_kernel(kernel)
    deep = options.convention == "deepnnk"
    if kern.uses_sigma and kernel != "rbf" and not deep:
        raise ValueError(f"channelwise NNK supports the bandwidth of kernel='rbf' only (per-channel scaling), got {kernel!r}")
    maps = channel_maps(x)
    c, n, s = maps.shape
    check_k(k, n)
    if neighbors is not None and tuple(neighbors.shape) != (c, n, k):
        raise ValueError(f"neighbors must have shape ({c}, {n}, {k}) (channels, samples, k), got {tuple(neighbors.shape)}")
    _warn_constant(maps)
    metric = "euclidean" if deep else kern.knn_metric
    with torch.no_grad():
        if neighbors is None:
            neighbors = torch.stack([knn(maps[i], k, metric=metric, backend=knn_backend, chunk_size=chunk_size)
                                     for i in range(c)])
        neighbors = neighbors.to(maps.device)
        sigmas, points, solve_sigma = None, maps, sigma
        if kernel == "rbf" and not deep:  # exp(-|a - b|^2 / (2 sigma_c^2)) = exp(-|a / sigma_c - b / sigma_c|^2 / 2)
            sigmas = torch.tensor([sigma if sigma is not None else rbf_sigma(maps[i], neighbors[i]) for i in range(c)],
                                  dtype=torch.float64)
            points, solve_sigma = maps.double() / sigmas.to(maps.device)[:, None, None], 1.0
        offset = (torch.arange(c, device=neighbors.device) * n)[:, None, None]
        res = options.replace(kernel=kernel, sigma=solve_sigma).weights(points.reshape(c * n, s),
                                                                        (neighbors + offset).reshape(c * n, k))
    if deep and isinstance(res.sigma, Tensor):
        sigmas = res.sigma.view(c, n)
    valid = None if res.valid is None else res.valid.view(c, n, k)
    return ChannelNNK(neighbors, res.weights.view(c, n, k).to(x.dtype), res.residual.view(c, n), kernel, sigmas,
                      valid, convention)


def channelwise_loo_errors(
    x: Tensor, labels: Tensor, k: int, max_nodes: int = MAX_NODES, neighbors: Tensor | None = None, **nnk_options
) -> Tensor:
    """Leave-one-out NNK label interpolation error of every channel (CW-DeepNNK, Bonet et al. 2021).

    For channel c, the error is that of :func:`geomlat.nnk.nnk_interpolation` on ``x[:, c].reshape(N, -1)``:
    each sample's label is predicted from its own NNK neighbors in that channel (weights theta, normalized),
    never from itself, and the error is the fraction of samples whose predicted class (argmax) is wrong.
    ``convention="deepnnk"`` gives the authors' conventions (module docstring; the authors use k = 25), solved
    by geomlat's exact solver instead of their pruning heuristic.

    Args:
        x: (N, C, ...) activation. labels: (N,) integer classes.
        k: k-NN candidates. max_nodes: channels are solved in groups of ``max(1, max_nodes // N)`` (bounds the
            memory of the stacked weights to about max_nodes * k values). neighbors: optional (C, N, k)
            candidates of every channel. nnk_options: see :func:`channelwise_nnk`.

    Returns:
        (C,) float64 errors in [0, 1]. Warns (RuntimeWarning) on constant channels, whose error is arbitrary.
    """
    options = NNKOptions(k=k, **nnk_options)  # an unknown option: TypeError listing the valid ones
    maps = channel_maps(x)
    c, n, _ = maps.shape
    y = check_labels(labels, n).to(x.device)
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    if neighbors is not None and tuple(neighbors.shape) != (c, n, k):
        raise ValueError(f"neighbors must have shape ({c}, {n}, {k}) (channels, samples, k), got {tuple(neighbors.shape)}")
    _warn_constant(maps)
    num_classes = int(y.max()) + 1
    group = max(1, max_nodes // n)
    errors = torch.empty(c, dtype=torch.float64)
    for start in range(0, c, group):
        stop = min(c, start + group)
        nb = None if neighbors is None else neighbors[start:stop]
        with warnings.catch_warnings():  # warned once above, with the channels' indices in x
            warnings.filterwarnings("ignore", message="channels .* are constant")
            res = channelwise_nnk(x[:, start:stop], neighbors=nb, **options.kwargs())
        pred = nnk_loo_predictions(_stacked(res), y.repeat(stop - start), num_classes)
        wrong = (pred.argmax(1) != y.repeat(stop - start)).view(stop - start, n)
        errors[start:stop] = wrong.double().mean(1).cpu()
    return errors


def channel_overlap(result: ChannelNNK, node_chunk: int = 4096) -> Tensor:
    """Overlap of the NNK neighborhoods of every pair of channels, a (C, C) matrix.

    ``overlap[a, b] = mean_i |N_a(i) ∩ N_b(i)| / |N_a(i) ∪ N_b(i)|``: the Jaccard index of sample i's directed
    NNK neighbor sets (its candidates with theta > 0) in channels a and b, averaged over the N samples (two
    empty sets count as 1), as :func:`geomlat.analysis.geometric_stability`'s ``"jaccard"`` for two models.
    1 = the two channels see the same local geometry (redundant channels); symmetric, diagonal 1.

    Args:
        result: :class:`ChannelNNK` of C channels. node_chunk: samples per step (memory ~ C * node_chunk * k).

    Returns:
        (C, C) float64. Cost O(C^2 N k log k).
    """
    nb, mask = result.neighbors, result.mask
    c, n, k = nb.shape
    size = mask.sum(2)  # (C, N)
    query = torch.where(mask, nb, torch.full_like(nb, -1))  # absent members never match
    ref = torch.where(mask, nb, torch.full_like(nb, n)).sort(2).values  # sorted for searchsorted; absent = n
    total = torch.zeros(c, c, dtype=torch.float64)
    for s in range(0, n, node_chunk):
        sl = slice(s, min(n, s + node_chunk))
        m = sl.stop - sl.start
        r = ref[:, sl].reshape(c * m, k).contiguous()
        for a in range(c):
            q = query[a, sl].repeat(c, 1)  # (C * m, k): sample i's members in channel a, once per channel b
            pos = torch.searchsorted(r, q).clamp_max(k - 1)
            inter = ((r.gather(1, pos) == q) & (q >= 0)).sum(1).view(c, m).double()
            union = size[a, sl][None].double() + size[:, sl].double() - inter
            jac = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
            total[a] += jac.sum(1).cpu()
    return total / n


class ChannelwiseEarlyStopping:
    """The channel-wise early-stopping rule of CW-DeepNNK (Bonet et al., APSIPA 2021, and its code).

    Exact rule (``patience`` = P): every channel c keeps its best error ``best_c`` (initially +inf) and a
    counter ``p_c`` (initially P). At each evaluation (every ``criterion_freq`` epochs in the paper), for each
    channel still active: if ``error_c < best_c`` (strictly) the error improved: ``best_c = error_c``,
    ``p_c = P`` and the model is checkpointed (for that channel); otherwise ``p_c -= 1``. A channel whose
    counter reaches 0 stops: in the paper its convolutional filter is frozen (removed from the trained
    variables) and its error is no longer evaluated. Training stops when every channel has stopped. There
    is no aggregate over channels: each channel has its own patience, and the single-curve rule of the same
    code (DeepNNK on a whole layer, or a validation error) is this rule with C = 1 (pass an aggregate such as
    the mean channel error as a (T, 1) history to get an aggregate rule).

    The model kept at the end (the authors' test mode restores the latest checkpoint) is the one saved at
    the last improvement of any channel: evaluation ``max_c best_eval_c``.

    Args:
        num_channels: C. patience: P >= 1.

    Use: ``stop = rule.update(errors)`` after each evaluation with the (C,) errors (the entries of stopped
    channels are ignored and may be NaN); ``rule.active_`` (C,) bool says which channels still train.
    """

    def __init__(self, num_channels: int, patience: int):
        check_int(patience, "patience", low=1)
        check_int(num_channels, "num_channels", low=1)
        self.patience = patience
        self.best_ = torch.full((num_channels,), float("inf"), dtype=torch.float64)
        self.counter_ = torch.full((num_channels,), patience, dtype=torch.long)
        self.best_eval_ = torch.full((num_channels,), -1, dtype=torch.long)
        self.stop_eval_ = torch.full((num_channels,), -1, dtype=torch.long)
        self.evaluations_ = 0

    @property
    def active_(self) -> Tensor:
        """(C,) bool: channels still training (patience left)."""
        return self.counter_ > 0

    @property
    def stopped(self) -> bool:
        """True once every channel has run out of patience."""
        return not bool(self.active_.any())

    @property
    def selected_eval(self) -> int:
        """Evaluation index of the checkpoint kept: the last improvement of any channel (-1 before any)."""
        return int(self.best_eval_.max())

    def update(self, errors) -> bool:
        """Record one evaluation's (C,) channel errors; returns True when training should stop (all channels out)."""
        e = torch.as_tensor(errors, dtype=torch.float64).reshape(-1).cpu()
        if e.numel() != self.best_.numel():
            raise ValueError(f"errors must have {self.best_.numel()} entries (one per channel), got {e.numel()}")
        if self.stopped:
            raise RuntimeError("every channel has already stopped; no further evaluation is expected")
        active = self.active_
        if not bool(torch.isfinite(e[active]).all()):
            raise ValueError(f"errors of active channels must be finite, got {e[active].tolist()}")
        t = self.evaluations_
        improved = active & (e < self.best_)
        worse = active & ~improved
        self.best_ = torch.where(improved, e, self.best_)
        self.best_eval_ = torch.where(improved, torch.full_like(self.best_eval_, t), self.best_eval_)
        self.counter_ = torch.where(improved, torch.full_like(self.counter_, self.patience), self.counter_ - worse.long())
        newly = worse & (self.counter_ == 0)
        self.stop_eval_ = torch.where(newly, torch.full_like(self.stop_eval_, t), self.stop_eval_)
        self.evaluations_ += 1
        return self.stopped


def channelwise_early_stopping(history: Tensor, patience: int) -> dict:
    """The channel-wise early-stopping rule (:class:`ChannelwiseEarlyStopping`) replayed on a history of errors.

    Args:
        history: (T, C) errors of C channels at T successive evaluations (e.g. :func:`channelwise_loo_errors`
            every epoch), or (T,) for a single curve. patience: P >= 1.

    Returns:
        ``{"stop": evaluation index at which the last channel ran out of patience (training ends there), or
        None if some channel still had patience at the end of the history; "selected": evaluation index of
        the model kept (the last improvement of any channel, up to the stop); "channel_stop": (C,) long, each
        channel's stop evaluation (-1 = never); "channel_best": (C,) long, each channel's best evaluation;
        "channel_best_error": (C,) float64}``.

    Replayed offline on a model trained without freezing, each channel's decision is the one the online
    rule makes from the same errors; what differs online is that a frozen channel changes the later
    training of the others.
    """
    h = torch.as_tensor(history, dtype=torch.float64)
    if h.dim() == 1:
        h = h[:, None]
    if h.dim() != 2 or h.shape[0] < 1 or h.shape[1] < 1:
        raise ValueError(f"history must have shape (T, C) or (T,) with T, C >= 1, got {tuple(h.shape)}")
    rule = ChannelwiseEarlyStopping(h.shape[1], patience)
    stop = None
    for t in range(h.shape[0]):
        if rule.update(torch.where(rule.active_, h[t], torch.zeros_like(h[t]))):
            stop = t
            break
    return {"stop": stop, "selected": rule.selected_eval, "channel_stop": rule.stop_eval_.clone(),
            "channel_best": rule.best_eval_.clone(), "channel_best_error": rule.best_.clone()}
