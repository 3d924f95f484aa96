"""Generalization measures of a trained model computed on training data only, as a registry.

A measure is one function registered with :func:`register_measure`::

    @register_measure("my_measure", sign=+1)
    def my_measure(model, inputs, labels, *, layers, generator, **options) -> float: ...

- ``model``: the trained ``nn.Module`` (put in eval mode by :func:`compute_measures`, its weights restored);
- ``inputs`` (N, ...), ``labels`` (N,): training samples (and their training labels, noisy ones included);
- ``layers``: names from ``model.named_modules()``, in forward order, the last ones being the representations
  the measure reads (the last entry: the penultimate representation, the input of the classifier); a measure
  uses the ones it needs (``layers[-1]`` or all of them, said in its docstring);
- ``generator``: a ``torch.Generator`` for every random draw (batches, mixup, perturbations);
- ``options``: the measure's own settings (keyword arguments with defaults).

It returns a float. ``sign`` says which way it points: +1 when a larger value predicts worse generalization
(a complexity, PGDL's convention), -1 when larger predicts better (a margin, RankMe); the study's oriented
value is ``sign * value``. :func:`compute_measures` computes any registered measures by name.

The feature-level functions (``rankme``, ``alpha_req``, ``nc1``, ``twonn_dimension``, ``path_norm``,
``pacbayes_mag_flatness``, :mod:`geomlat.analysis._pgdl`) each cite their source and are tested against an
independent computation.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..capture import LatentCapture
from ..registry import Registry
from . import _pgdl
from .generalization import output_margin, parameter_norm, sharpness_proxy


@dataclass(frozen=True)
class Measure:
    """A registered measure: ``fn(model, inputs, labels, *, layers, generator, **options) -> float`` and its sign."""

    name: str
    fn: Callable[..., float]
    sign: int


def _check_measure(name: str, m: Measure) -> None:
    if m.sign not in (-1, 1):
        raise ValueError(f"measure {name!r}: sign must be +1 or -1, got {m.sign!r}")
    if not callable(m.fn):
        raise TypeError(f"measure {name!r} is not callable")


#: Registered measures by name (:func:`register_measure`).
MEASURES: Registry[Measure] = Registry("measure", _check_measure)


def register_measure(name: str, fn: Callable | None = None, *, sign: int = 1, replace: bool = False):
    """Register ``fn`` as measure ``name`` (decorator when ``fn`` is None); returns ``fn``. See the module docstring."""

    def add(f: Callable) -> Callable:
        MEASURES.register(name, Measure(name, f, sign), replace=replace)
        return f

    return add if fn is None else add(fn)


@torch.no_grad()
def model_features(model: nn.Module, inputs: Tensor, layers: Sequence[str], batch_size: int = 512) -> dict[str, Tensor]:
    """``{layer: (N, ...) outputs}`` of the named modules of ``model`` on ``inputs`` (N, ...), in eval mode,
    ``batch_size`` samples per forward pass; ``"logits"`` is the model's output."""
    names = [n for n in dict.fromkeys(layers) if n != "logits"]
    parts: dict[str, list[Tensor]] = {n: [] for n in [*names, "logits"]}
    for start in range(0, len(inputs), batch_size):
        if not names:
            parts["logits"].append(model(inputs[start : start + batch_size]).detach())
            continue
        with LatentCapture(model, names, detach=True) as captured:
            out = model(inputs[start : start + batch_size])
        for n in names:
            parts[n].append(captured[n])
        parts["logits"].append(out.detach())
    return {n: torch.cat(parts[n]) for n in layers}


def compute_measures(model: nn.Module, inputs: Tensor, labels: Tensor, names: Sequence[str], *,
                     layers: Sequence[str] = (), seed: int = 0, options: dict[str, dict] | None = None) -> dict[str, float]:
    """Registered measures ``names`` of ``model`` on training data ``inputs`` (N, ...), ``labels`` (N,).

    Each measure gets a fresh generator seeded with ``seed`` and its ``options[name]``; the model is put in eval
    mode (its mode and weights are restored afterwards). Returns ``{name: value}`` (raw, see ``MEASURES[name].sign``).
    Unknown names raise :class:`geomlat.registry.UnknownNameError` listing the registered ones."""
    options = options or {}
    unknown = set(options) - set(names)
    if unknown:
        raise ValueError(f"options given for measures not requested: {sorted(unknown)}")
    measures = [MEASURES[n] for n in names]
    was_training = model.training
    model.eval()
    out = {}
    try:
        for m in measures:
            gen = torch.Generator().manual_seed(seed)
            out[m.name] = float(m.fn(model, inputs, labels, layers=list(layers), generator=gen, **options.get(m.name, {})))
    finally:
        model.train(was_training)
    return out


def _need_layers(layers: Sequence[str], n: int, name: str) -> None:
    if len(layers) < n:
        raise ValueError(f"measure {name!r} needs at least {n} layer name(s) in layers=, got {list(layers)}")


# ------------------------------------------------------------------------------------------ feature measures
def _centered(x: Tensor) -> Tensor:
    flat = x.detach().reshape(x.shape[0], -1).double()
    return flat - flat.mean(0)


def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023, Eq. 1): ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / |s|_1 + eps`` with
    ``s`` the singular values of the (N, d) embeddings (not centered, as in the paper). Larger = higher rank."""
    s = torch.linalg.svdvals(z.detach().reshape(z.shape[0], -1).double())
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def alpha_req(z: Tensor, fit: tuple[int, int] | None = None) -> float:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): the decay exponent alpha of the eigenspectrum of the feature
    covariance, ``lambda_i ~ i^-alpha``, by least squares of ``log lambda_i`` on ``log i`` over the ranks
    ``fit = (first, last)`` (1-based, inclusive; default all ranks up to min(N - 1, d) with ``lambda > 0``).
    The paper finds generalization best for alpha near 1."""
    lam = torch.linalg.eigvalsh(_centered(z).T @ _centered(z) / (z.shape[0] - 1)).flip(0)
    lo, hi = fit or (1, int((lam > lam[0] * 1e-12).sum()))
    if not 1 <= lo < hi <= len(lam):
        raise ValueError(f"fit ranks must satisfy 1 <= first < last <= {len(lam)}, got {(lo, hi)}")
    i = torch.arange(lo, hi + 1, dtype=torch.float64)
    a = torch.stack([torch.log(i), torch.ones_like(i)], 1)
    slope = torch.linalg.lstsq(a, torch.log(lam[lo - 1 : hi].clamp_min(1e-300))[:, None]).solution[0, 0]
    return float(-slope)


def nc1(z: Tensor, labels: Tensor) -> float:
    """Neural-collapse NC1 (Papyan, Han & Donoho, PNAS 2020): ``tr(Sigma_W Sigma_B^+) / C`` with Sigma_W the
    within-class covariance (mean over samples of ``(h - mu_c)(h - mu_c)^T``), Sigma_B the covariance of the class
    means around the global mean (classes weighted equally), ``^+`` the pseudo-inverse. 0 = collapsed classes."""
    flat = z.detach().reshape(z.shape[0], -1).double()
    classes = torch.unique(labels)
    means = torch.stack([flat[labels == c].mean(0) for c in classes])
    centered = flat - means[torch.searchsorted(classes, labels)]
    sw = centered.T @ centered / flat.shape[0]
    mb = means - means.mean(0)
    sb = mb.T @ mb / len(classes)
    return float(torch.trace(sw @ torch.linalg.pinv(sb, hermitian=True)) / len(classes))


def twonn_dimension(z: Tensor, discard: float = 0.1) -> float:
    """TwoNN intrinsic dimension (Facco et al., Sci. Rep. 2017): ``mu_i = r2_i / r1_i`` (second over first
    nearest-neighbor distance); the fit of ``-log(1 - F(mu)) = d log mu`` through the origin on the empirical
    distribution of mu with the largest ``discard`` fraction of mu dropped (their default 10%), by least squares.
    Duplicate points (r1 = 0) are dropped first."""
    flat = z.detach().reshape(z.shape[0], -1).double()
    d = torch.cdist(flat, flat)
    d.fill_diagonal_(float("inf"))
    r = d.topk(2, dim=1, largest=False).values
    keep = r[:, 0] > 0
    mu = (r[keep, 1] / r[keep, 0]).sort().values
    n = len(mu)
    if n < 3:
        raise ValueError(f"TwoNN needs at least 3 distinct points, got {n}")
    m = int(math.floor(n * (1 - discard)))
    x = torch.log(mu[:m])
    y = -torch.log(1 - torch.arange(1, m + 1, dtype=torch.float64) / n)
    return float((x * y).sum() / (x * x).sum())


# ------------------------------------------------------------------------------------------ weight measures
@torch.no_grad()
def path_norm(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Path norm (Neyshabur et al., 2015; Jiang et al. 2020's ``path.norm``): ``sum over input-output paths of
    the product of the squared weights on the path``, computed as the sum of the outputs of a copy of the model
    whose weights are squared and biases zeroed, on an all-ones input of shape ``(1, *input_shape)``. Exact for
    networks of linear / convolution layers with ReLU (or identity) activations and pooling by averaging;
    batch normalization is not a path weight (eval mode applies its affine map to the squared-weight signal)."""
    squared = copy.deepcopy(model).eval()
    for name, p in squared.named_parameters():
        p.copy_(torch.zeros_like(p) if name.endswith("bias") else p * p)
    out = squared(torch.ones(1, *input_shape, dtype=next(model.parameters()).dtype))
    return float(out.double().sum())


@torch.no_grad()
def pacbayes_mag_flatness(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], deviation: float = 0.1,
                          samples: int = 10, iterations: int = 20, eps: float = 1e-3, bounds: tuple[float, float] = (1e-6, 10.0),
                          generator: torch.Generator | None = None) -> float:
    """Magnitude-aware PAC-Bayes flatness (Jiang et al., ICLR 2020, ``pacbayes.mag.flatness``, Eq. 52): ``1 / s^2``
    for the largest relative scale ``s`` such that perturbing every weight ``w`` by ``N(0, s^2 w^2 + eps^2)``
    raises the training loss by at most ``deviation`` (mean over ``samples`` perturbations).

    ``s`` is found by bisection on log s within ``bounds`` for ``iterations`` steps (Jiang et al. search the
    same way); every evaluation uses the same ``samples`` noise draws (common random numbers, so the loss is a
    monotone function of s for a convex loss path). Jiang et al. target a training *accuracy* drop of 0.1 and
    omit eps; here the target is the loss (cross-entropy of ``loss_fn``), which stays informative at 100%
    training accuracy. Weights are restored exactly. Larger = sharper."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    gen = generator or torch.Generator().manual_seed(0)
    noise = [[torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device) for w in saved] for _ in range(samples)]
    base = float(loss_fn(model))

    def rise(s: float) -> float:
        total = 0.0
        for draw in noise:
            for p, w, e in zip(params, saved, draw):
                p.copy_(w + torch.sqrt(s**2 * w * w + eps**2) * e)
            total += float(loss_fn(model))
        return total / samples - base

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    try:
        for _ in range(iterations):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if rise(math.exp(mid)) <= deviation else (lo, mid)
    finally:
        for p, w in zip(params, saved):
            p.copy_(w)
    return 1.0 / math.exp(lo) ** 2


# ------------------------------------------------------------------------------------------ sampling
def balanced_batch(labels: Tensor, per_class: int, generator: torch.Generator) -> Tensor:
    """Indices of a class-balanced batch: ``per_class`` random samples of every class (fewer if a class has fewer)."""
    idx = []
    for c in torch.unique(labels).tolist():
        members = (labels == c).nonzero()[:, 0]
        idx.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(idx)


# ------------------------------------------------------------------------------------------ registered measures
def _logits(model, inputs):
    return model_features(model, inputs, ["logits"])["logits"]


@register_measure("train_error")
def _train_error(model, inputs, labels, *, layers, generator):
    """Training error (fraction of wrong argmax)."""
    return float((_logits(model, inputs).argmax(1) != labels).double().mean())


@register_measure("train_loss")
def _train_loss(model, inputs, labels, *, layers, generator):
    """Mean training cross-entropy."""
    return float(F.cross_entropy(_logits(model, inputs).double(), labels))


@register_measure("margin", sign=-1)
def _margin(model, inputs, labels, *, layers, generator, quantile: float = 0.1):
    """``quantile`` of the output margins (Jiang et al. 2020; the selection study's ``margin``)."""
    return float(torch.quantile(output_margin(_logits(model, inputs), labels).double(), quantile))


@register_measure("param_norm")
def _param_norm(model, inputs, labels, *, layers, generator):
    """Squared L2 norm of the parameters (:func:`geomlat.analysis.parameter_norm`)."""
    return parameter_norm(model)


@register_measure("sharpness")
def _sharpness(model, inputs, labels, *, layers, generator, sigma: float = 0.01, samples: int = 5, seed: int = 0):
    """:func:`geomlat.analysis.sharpness_proxy` with the cross-entropy on ``inputs`` (the selection study's)."""
    return sharpness_proxy(model, lambda m: F.cross_entropy(m(inputs), labels), sigma, samples, seed)


@register_measure("path_norm")
def _path_norm(model, inputs, labels, *, layers, generator):
    """:func:`path_norm` on inputs of the training samples' shape."""
    return path_norm(model, inputs.shape[1:])


@register_measure("pacbayes_mag_flatness")
def _flatness(model, inputs, labels, *, layers, generator, **options):
    """:func:`pacbayes_mag_flatness` with the training cross-entropy."""
    return pacbayes_mag_flatness(model, lambda m: F.cross_entropy(m(inputs), labels), generator=generator, **options)


def _last(model, inputs, layers, name):
    _need_layers(layers, 1, name)
    return model_features(model, inputs, layers[-1:])[layers[-1]]


@register_measure("rankme", sign=-1)
def _rankme(model, inputs, labels, *, layers, generator):
    """:func:`rankme` of ``layers[-1]``."""
    return rankme(_last(model, inputs, layers, "rankme"))


@register_measure("alpha_req_distance")
def _alpha_req(model, inputs, labels, *, layers, generator, fit=None):
    """``|alpha - 1|`` of :func:`alpha_req` on ``layers[-1]`` (Agrawal et al.: best near alpha = 1)."""
    return abs(alpha_req(_last(model, inputs, layers, "alpha_req_distance"), fit) - 1.0)


@register_measure("nc1")
def _nc1(model, inputs, labels, *, layers, generator):
    """:func:`nc1` of ``layers[-1]``."""
    return nc1(_last(model, inputs, layers, "nc1"), labels)


@register_measure("twonn")
def _twonn(model, inputs, labels, *, layers, generator, discard: float = 0.1):
    """:func:`twonn_dimension` of ``layers[-1]`` (Ansuini et al. 2019: a lower last-layer ID goes with better accuracy)."""
    return twonn_dimension(_last(model, inputs, layers, "twonn"), discard)


@register_measure("nnk_loo")
def _nnk_loo(model, inputs, labels, *, layers, generator, k: int = 15, **nnk_options):
    """NNK leave-one-out error of ``layers[-1]`` (:func:`geomlat.nnk.nnk_interpolation`; default convention and
    cosine kernel, the selection study's ``nnk_loo``)."""
    from ..nnk import nnk_interpolation

    return nnk_interpolation(_last(model, inputs, layers, "nnk_loo").flatten(1).double(), labels, k, **nnk_options)[1]


@register_measure("nnk_loo_deepnnk")
def _nnk_loo_deepnnk(model, inputs, labels, *, layers, generator, k: int = 25, **nnk_options):
    """NNK leave-one-out error of ``layers[-1]`` with the authors' conventions (``convention="deepnnk"``, k = 25)."""
    return _nnk_loo(model, inputs, labels, layers=layers, generator=generator, k=k, convention="deepnnk", **nnk_options)


@register_measure("channel_nnk_deepnnk")
def _channel_nnk(model, inputs, labels, *, layers, generator, k: int = 25, **nnk_options):
    """Mean over channels of the channel-wise NNK LOO errors of ``layers[-1]`` (N, C, ...) with the authors'
    conventions (:func:`geomlat.analysis.channelwise_loo_errors`, ``convention="deepnnk"``, k = 25)."""
    from .channelwise import channelwise_loo_errors

    x = _last(model, inputs, layers, "channel_nnk_deepnnk").double()
    return float(channelwise_loo_errors(x, labels, k, convention="deepnnk", **nnk_options).mean())


@register_measure("pgdl_smoothness_rate")
def _vr(model, inputs, labels, *, layers, generator, batch_size: int = 500, max_batches: int = 11, k: int = 20):
    """Lassance et al.'s PGDL entry ``VR`` (:func:`geomlat.analysis._pgdl.smoothness_rate`): per batch of
    ``batch_size`` consecutive training samples (theirs: the first 11 batches of 500), the mean change of
    smoothness across ``layers`` (theirs: the inputs of the last two layers and the output: pass e.g.
    ``[penultimate modules..., "logits"]``); median over batches. Differs: module outputs instead of layer inputs."""
    _need_layers(layers, 2, "pgdl_smoothness_rate")
    onehot = F.one_hot(labels, int(labels.max()) + 1)
    values = []
    for start in range(0, min(len(inputs), batch_size * max_batches) - batch_size + 1, batch_size):
        feats = model_features(model, inputs[start : start + batch_size], layers)
        values.append(_pgdl.smoothness_rate([feats[n] for n in layers], onehot[start : start + batch_size], k))
    if not values:
        raise ValueError(f"pgdl_smoothness_rate needs at least batch_size={batch_size} samples, got {len(inputs)}")
    return float(torch.tensor(values).median())


@register_measure("pgdl_smoothness_max")
def _wcv(model, inputs, labels, *, layers, generator, per_class: int = 50):
    """Lassance et al.'s PGDL entry ``WCV`` (:func:`geomlat.analysis._pgdl.smoothness_max`): one class-balanced
    batch of ``per_class`` samples per class (theirs: 50, the first of each class; here random), max over
    ``layers`` (theirs: the inputs of the last ``len(model.layers) // 3 + 1`` layers)."""
    _need_layers(layers, 1, "pgdl_smoothness_max")
    idx = balanced_batch(labels, per_class, generator)
    feats = model_features(model, inputs[idx], layers)
    onehot = F.one_hot(labels[idx], int(labels.max()) + 1)
    return _pgdl.smoothness_max([feats[n] for n in layers], onehot)


@register_measure("pgdl_smoothness_mixup")
def _vpm(model, inputs, labels, *, layers, generator, batch: int = 500, alpha: float = 2.0):
    """Lassance et al.'s PGDL entry ``VPM_1``: a class-balanced batch of ``batch // C`` samples per class, input
    mixup (:func:`geomlat.analysis._pgdl.input_mixup`, Beta(2, 2)), the directed RBF 1-NN smoothness
    (:func:`geomlat.analysis._pgdl.smoothness_rbf_1nn`, ``symmetric=False``) of ``layers[-1]`` (theirs: the input
    of the last layer) with the mixed labels."""
    _need_layers(layers, 1, "pgdl_smoothness_mixup")
    c = int(labels.max()) + 1
    idx = balanced_batch(labels, batch // c, generator)
    mixed, soft = _pgdl.input_mixup(inputs[idx], F.one_hot(labels[idx], c), alpha, generator)
    return _pgdl.smoothness_rbf_1nn(model_features(model, mixed, layers[-1:])[layers[-1]], soft, symmetric=False)


@register_measure("pgdl_dbi_mixup")
def _dbi_mixup(model, inputs, labels, *, layers, generator, samples: int = 120, repeats: int = 10,
               pool: int = 4, per_class: int = 10):
    """The PGDL winner (Natekar & Sharma, ``parthnatekar/pgdl``, ``complexity.py``, measure ``'DBI, Mixup'``):
    ``DBI * (1 - mixup accuracy)``. DBI: :func:`geomlat.analysis._pgdl.davies_bouldin` of the (pool x pool)
    max-pooled output of ``layers[0]`` (theirs: the first strided layer) on ``samples`` random training samples
    (theirs 3 x 40), averaged over ``repeats`` draws. Mixup accuracy: accuracy on the midpoints of every pair of
    same-class samples of ``per_class`` random samples per class (theirs: 10 batches of 10 per class)."""
    _need_layers(layers, 1, "pgdl_dbi_mixup")
    dbi = 0.0
    for _ in range(repeats):
        idx = torch.randperm(len(inputs), generator=generator)[:samples]
        f = model_features(model, inputs[idx], layers[:1])[layers[0]]
        if f.dim() == 4 and pool > 1:
            f = F.max_pool2d(f, pool)
        dbi += _pgdl.davies_bouldin(f, labels[idx]) / repeats
    x, y = _pgdl.intraclass_mixup_pairs(*(t[balanced_batch(labels, per_class, generator)] for t in (inputs, labels)))
    acc = float((_logits(model, x).argmax(1) == y).double().mean())
    return dbi * (1 - acc)


@register_measure("davies_bouldin")
def _dbi(model, inputs, labels, *, layers, generator):
    """:func:`geomlat.analysis._pgdl.davies_bouldin` of ``layers[-1]`` on all ``inputs``."""
    return _pgdl.davies_bouldin(_last(model, inputs, layers, "davies_bouldin"), labels)
