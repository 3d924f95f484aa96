"""Does a measure predict generalization? Rank statistics over a population of trained models, and the classic
baseline measures (Jiang et al., "Fantastic generalization measures and where to find them", ICLR 2020).

Statistics (plain floats/tensors, CPU):

- :func:`kendall_tau`: Jiang et al.'s tau over all pairs of models, ``mean_{i != j} sign(mu_i - mu_j) sign(g_i - g_j)``
  (tau-a: a tied pair counts 0);
- :func:`granulated_kendall`: per hyperparameter axis, the mean tau over the groups of models that differ only
  along that axis, and their mean Psi;
- :func:`bootstrap_ci`: percentile bootstrap interval of any such statistic, resampling models;
- :func:`selection_regret` and :func:`early_stopping_regret`: the test error lost by trusting a measure.

Baselines computed on training data only: :func:`output_margin`, :func:`parameter_norm`,
:func:`sharpness_proxy` (loss increase under small random weight perturbations).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .channelwise import channelwise_early_stopping


def _vector(x, name: str) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values")
    return t


def kendall_tau(measure, target) -> float:
    """Kendall's tau of Jiang et al. (2020, Eq. 3) between a measure and a target over M models.

    ``tau = 1 / (M (M - 1)) * sum_{i != j} sign(measure_i - measure_j) * sign(target_i - target_j)``; a pair tied
    in either counts 0 (tau-a), so tau is in [-1, 1] and 1 means the measure orders the models as the target.

    Args:
        measure, target: (M,) values, M >= 2. Returns a float. Cost O(M^2).
    """
    a, b = _vector(measure, "measure"), _vector(target, "target")
    if a.numel() != b.numel() or a.numel() < 2:
        raise ValueError(f"measure and target need the same length >= 2, got {a.numel()} and {b.numel()}")
    s = torch.sign(a[:, None] - a[None, :]) * torch.sign(b[:, None] - b[None, :])
    m = a.numel()
    return float(s.sum() / (m * (m - 1)))


def granulated_kendall(measure, target, axes: dict[str, Sequence]) -> dict:
    """Granulated Kendall coefficient (Jiang et al. 2020, Eq. 4-5).

    For axis i, the models are grouped by their values on all the other axes; ``m_i`` is the mean of
    :func:`kendall_tau` over the groups with at least 2 models that do not all share one value of axis i (the
    models of a group differ only along axis i); ``psi`` is the mean of the ``m_i`` that are defined.

    Args:
        measure, target: (M,) values. axes: ``{axis name: (M,) hyperparameter value of each model}`` (any
            hashable values, e.g. width, weight decay, seed).

    Returns:
        ``{"per_axis": {name: m_i or NaN when no group qualifies}, "groups": {name: number of groups used},
        "psi": mean of the defined m_i (NaN if none)}``.
    """
    a, b = _vector(measure, "measure"), _vector(target, "target")
    m = a.numel()
    if b.numel() != m:
        raise ValueError(f"measure and target need the same length, got {m} and {b.numel()}")
    if not axes:
        raise ValueError("axes is empty: pass {axis name: the value of that hyperparameter for each model}")
    columns = {}
    for name, values in axes.items():
        values = list(values.tolist() if isinstance(values, Tensor) else values)
        if len(values) != m:
            raise ValueError(f"axis {name!r} has {len(values)} values for {m} models")
        columns[name] = values
    per_axis, groups = {}, {}
    for name in columns:
        others = [n for n in columns if n != name]
        buckets: dict[tuple, list[int]] = {}
        for i in range(m):
            buckets.setdefault(tuple(columns[o][i] for o in others), []).append(i)
        taus = []
        for idx in buckets.values():
            if len(idx) >= 2 and len({columns[name][i] for i in idx}) >= 2:
                taus.append(kendall_tau(a[idx], b[idx]))
        per_axis[name] = sum(taus) / len(taus) if taus else float("nan")
        groups[name] = len(taus)
    defined = [v for v in per_axis.values() if not math.isnan(v)]
    return {"per_axis": per_axis, "groups": groups, "psi": sum(defined) / len(defined) if defined else float("nan")}


def bootstrap_ci(statistic: Callable[..., float], *arrays, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling the M models with replacement.

    Args:
        statistic: function of the arrays (each indexed by model, e.g. ``kendall_tau``).
        arrays: (M,) tensors/sequences, resampled with the same indices. n_boot: resamples; level: coverage.

    Returns:
        ``(low, high)`` quantiles of the resampled statistics (resamples where it is NaN are dropped).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array (one entry per model)")
    cols = [a if isinstance(a, Tensor) else list(a) for a in arrays]
    m = len(cols[0])
    if any(len(c) != m for c in cols):
        raise ValueError(f"all arrays must have the same length, got {[len(c) for c in cols]}")
    gen = torch.Generator().manual_seed(seed)
    stats = []
    for _ in range(n_boot):
        idx = torch.randint(0, m, (m,), generator=gen)
        sample = [c[idx] if isinstance(c, Tensor) else [c[i] for i in idx.tolist()] for c in cols]
        v = statistic(*sample)
        if not math.isnan(v):
            stats.append(v)
    if not stats:
        return float("nan"), float("nan")
    s = torch.tensor(stats, dtype=torch.float64)
    alpha = (1 - level) / 2
    return float(torch.quantile(s, alpha)), float(torch.quantile(s, 1 - alpha))


def selection_regret(measure, target, lower_is_better: bool = True) -> float:
    """Target (e.g. test error) of the model the measure picks minus the best target: ``target[argbest measure] - min target``.

    Ties in the measure: the mean target of the tied models. ``lower_is_better=False`` for measures such as margin.
    """
    a, b = _vector(measure, "measure"), _vector(target, "target")
    if a.numel() != b.numel() or a.numel() < 1:
        raise ValueError(f"measure and target need the same length >= 1, got {a.numel()} and {b.numel()}")
    best = a.min() if lower_is_better else a.max()
    return float(b[a == best].mean() - b.min())


def early_stopping_regret(measure_curve, test_curve, patience: int, lower_is_better: bool = True) -> dict:
    """Early stopping on a measure's curve over epochs, scored by the test error it keeps.

    The rule is the patience rule of :func:`geomlat.analysis.channelwise_early_stopping` on one curve (a
    strict improvement resets the patience; the model kept is the one of the last improvement). For the
    channel-wise rule pass its ``"selected"`` evaluation to ``test_curve`` directly.

    Args:
        measure_curve: (T,) measure at T evaluations; test_curve: (T,) test error at the same evaluations.

    Returns:
        ``{"selected": evaluation kept, "stop": evaluation where patience ran out (None: never),
        "regret": test_curve[selected] - min(test_curve)}``.
    """
    a, b = _vector(measure_curve, "measure_curve"), _vector(test_curve, "test_curve")
    if a.numel() != b.numel():
        raise ValueError(f"measure_curve and test_curve need the same length, got {a.numel()} and {b.numel()}")
    out = channelwise_early_stopping(a if lower_is_better else -a, patience)
    sel = out["selected"]
    return {"selected": sel, "stop": out["stop"], "regret": float(b[sel] - b.min())}


def output_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """(N,) output margin: the true class's logit minus the largest other logit (negative = misclassified).

    Args: logits (N, K), K >= 2; labels (N,) integer classes.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2, got {tuple(logits.shape)}")
    y = labels.long().to(logits.device)
    if y.shape != (logits.shape[0],):
        raise ValueError(f"labels has shape {tuple(y.shape)}, expected ({logits.shape[0]},)")
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


def parameter_norm(model: nn.Module) -> float:
    """Squared L2 norm of all trainable parameters, ``sum_w |w|^2`` (Jiang et al.'s "l2" / parameter norm)."""
    return float(sum(p.detach().double().pow(2).sum() for p in model.parameters() if p.requires_grad))


@torch.no_grad()
def sharpness_proxy(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], sigma: float = 0.01, n_samples: int = 5,
                    seed: int = 0) -> float:
    """Mean loss increase under random magnitude-aware weight perturbations ``w + sigma * |w| * eps``, eps ~ N(0, 1).

    Args:
        model: the trained model (weights restored exactly afterwards, also on error).
        loss_fn: ``loss_fn(model) -> scalar loss`` on training data (e.g. a fixed batch, model in eval mode).
        sigma: relative perturbation size; n_samples: perturbations averaged; seed: of their generator.

    Returns:
        ``mean_s loss(w + delta_s) - loss(w)``.
    """
    if not sigma > 0 or n_samples < 1:
        raise ValueError(f"sigma must be > 0 and n_samples >= 1, got {sigma} and {n_samples}")
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)
    base = float(loss_fn(model))
    total = 0.0
    try:
        for _ in range(n_samples):
            for p, w in zip(params, saved):
                eps = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
                p.copy_(w + sigma * w.abs() * eps)
            total += float(loss_fn(model))
    finally:
        for p, w in zip(params, saved):
            p.copy_(w)
    return total / n_samples - base
