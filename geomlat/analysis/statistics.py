"""Statistics behind a study's readings: information-theoretic scores of generalization measures and paired
differences over seeds.

- :func:`conditional_mutual_information`: Jiang et al.'s normalized conditional mutual information between the
  ordering of two models by a measure and by their generalization gap, given the hyperparameters of the pair
  ("Fantastic generalization measures and where to find them", ICLR 2020, Sec. 6.2), minimized over the
  conditioning sets of at most ``max_set`` hyperparameters;
- :func:`pgdl_cmi`: the same score as the PGDL competition's scoring program computes it (Jiang et al., NeurIPS
  2020 competition "Predicting Generalization in Deep Learning": unweighted mean over conditioning cells, pairs
  of two hyperparameters only, ties and the diagonal counted as "-");
- :func:`paired_difference`: mean paired difference of a method to its baseline over seeds, with a percentile
  bootstrap or Student-t interval and the paired t-test's p-value.

Kendall's tau, the granulated coefficient and the bootstrap over models are in :mod:`.generalization`; combine
them with :func:`geomlat.analysis.bootstrap_ci` (e.g. ``bootstrap_ci(lambda m, g: pgdl_cmi(m, g, axes_of(...)), ...)``
needs the axes resampled with the models: pass them as extra arrays).
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def _finite(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=np.float64).reshape(-1)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains non-finite values")
    return a


def _axis_codes(axes: dict[str, Sequence], m: int) -> dict[str, np.ndarray]:
    """``{name: (M,) integer code of each model's value}`` (codes in order of first appearance)."""
    if not axes:
        raise ValueError("axes is empty: pass {hyperparameter name: its value for each model}")
    codes = {}
    for name, values in axes.items():
        values = list(values.tolist() if isinstance(values, (Tensor, np.ndarray)) else values)
        if len(values) != m:
            raise ValueError(f"axis {name!r} has {len(values)} values for {m} models")
        index: dict = {}
        codes[name] = np.array([index.setdefault(v, len(index)) for v in values], dtype=np.int64)
    return codes


def _pair_cells(codes: dict[str, np.ndarray], subset: Sequence[str], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(P,) cell id of each ordered pair (i, j): the hyperparameters in ``subset`` of model i and of model j."""
    cell = np.zeros(len(i), dtype=np.int64)
    for name in subset:
        c = codes[name]
        k = int(c.max()) + 1
        cell = (cell * k + c[i]) * k + c[j]
    return np.unique(cell, return_inverse=True)[1].reshape(-1)


def _tables(v_mu: np.ndarray, v_g: np.ndarray, cells: np.ndarray, n_values: int) -> np.ndarray:
    """(n_cells, n_values, n_values) pair counts: [cell, V_g, V_mu]."""
    t = np.zeros((int(cells.max()) + 1, n_values, n_values))
    np.add.at(t, (cells, v_g, v_mu), 1.0)
    return t


def _mi_and_entropy(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of (C, a, b) counts: the mutual information of the two axes and the entropy of the first (nats)."""
    n = t.sum(axis=(1, 2), keepdims=True)
    p = t / np.where(n > 0, n, 1.0)
    pa, pb = p.sum(2, keepdims=True), p.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = np.where(p > 0, p * np.log(p / (pa * pb)), 0.0).sum(axis=(1, 2))
        h = -np.where(pa > 0, pa * np.log(pa), 0.0).sum(axis=(1, 2))
    return mi, h


def conditional_mutual_information(measure, gap, axes: dict[str, Sequence], max_set: int = 2, ids=None) -> dict:
    """Jiang et al.'s (2020, Sec. 6.2) conditional mutual information score of a measure.

    Over the ordered pairs (i, j), i != j, of the M models: ``V_mu = sign(mu_i - mu_j)``, ``V_g = sign(g_i - g_j)``
    (a tie is a third value, 0) and ``U_S`` = the values of the hyperparameters S of model i and of model j. For
    each S with ``|S| <= max_set``::

        I(V_mu; V_g | U_S) = sum_u p(u) sum_{a,b} p(a, b | u) log(p(a, b | u) / (p(a | u) p(b | u)))
        score_S = I(V_mu; V_g | U_S) / H(V_g | U_S)

    and the score is ``min_S score_S`` (the measure must explain the gap under every conditioning). It is in [0, 1],
    1 when the measure orders every pair as the gap, and invariant to the sign of the measure (it scores how much
    the ordering tells, not its direction: read the direction from Kendall's tau).

    Args:
        measure, gap: (M,) values (gap = the target: generalization gap or test error). axes: ``{name: (M,) value}``.
        max_set: the largest conditioning set (Jiang et al. use 2).
        ids: optional (M,) model identities; pairs of two entries with the same id are left out (for a bootstrap
            resample, whose copies of one model would otherwise count as pairs tied in both and inflate the score).

    Returns:
        ``{"score": min over S (NaN when every S has H(V_g | U_S) = 0), "per_set": {tuple S: score_S},
        "argmin": the S reaching the minimum}``.
    """
    mu, g = _finite(measure, "measure"), _finite(gap, "gap")
    m = mu.size
    if g.size != m or m < 2:
        raise ValueError(f"measure and gap need the same length >= 2, got {m} and {g.size}")
    if max_set < 0:
        raise ValueError(f"max_set must be >= 0, got {max_set}")
    codes = _axis_codes(axes, m)
    i, j = np.nonzero(~np.eye(m, dtype=bool))
    if ids is not None:
        ids = _finite(ids, "ids")
        if ids.size != m:
            raise ValueError(f"ids has {ids.size} entries for {m} models")
        keep = ids[i] != ids[j]
        i, j = i[keep], j[keep]
    v_mu = (np.sign(mu[i] - mu[j]) + 1).astype(np.int64)  # -1, 0, +1 -> 0, 1, 2
    v_g = (np.sign(g[i] - g[j]) + 1).astype(np.int64)
    per_set = {}
    for size in range(0, min(max_set, len(codes)) + 1):
        for subset in itertools.combinations(codes, size):
            cells = _pair_cells(codes, subset, i, j)
            t = _tables(v_mu, v_g, cells, 3)
            w = t.sum(axis=(1, 2)) / len(i)  # p(U_S = u)
            mi, h = _mi_and_entropy(t)
            h_cond = float((w * h).sum())
            per_set[subset] = float((w * mi).sum()) / h_cond if h_cond > 1e-12 else math.nan
    defined = {s: v for s, v in per_set.items() if not math.isnan(v)}
    if not defined:
        return {"score": math.nan, "per_set": per_set, "argmin": None}
    arg = min(defined, key=defined.get)
    return {"score": defined[arg], "per_set": per_set, "argmin": arg}


def pgdl_cmi(measure, gap, axes: dict[str, Sequence]) -> float:
    """The conditional mutual information score of the PGDL competition's scoring program (Jiang et al. 2020).

    As :func:`conditional_mutual_information` with the scoring program's choices: every ordered pair (i, j)
    *including* i == j; ``V = "+"`` when ``x_i > x_j``, else ``"-"`` (a tie counts "-"); conditioning sets of
    exactly two hyperparameters; per set the *unweighted* mean over the cells ``u`` of ``I(V_mu; V_g | u)``
    divided by the unweighted mean of ``H(V_g | u)``; the score is the minimum over the sets. The program needs
    a complete grid (every combination of the two hyperparameters' values trained) and gives NaN otherwise;
    here the cells with no pair are left out of the means instead. Fewer than two axes: the one set is all axes.

    Args:
        measure, gap: (M,) values; the competition's gap is train accuracy - test accuracy. axes: ``{name: (M,)}``.

    Returns:
        The score in [0, 1] (NaN when ``H(V_g | u)`` is 0 in every cell).
    """
    mu, g = _finite(measure, "measure"), _finite(gap, "gap")
    m = mu.size
    if g.size != m or m < 1:
        raise ValueError(f"measure and gap need the same length >= 1, got {m} and {g.size}")
    codes = _axis_codes(axes, m)
    i, j = (a.reshape(-1) for a in np.meshgrid(np.arange(m), np.arange(m), indexing="ij"))
    v_mu = (mu[i] > mu[j]).astype(np.int64)
    v_g = (g[i] > g[j]).astype(np.int64)
    sets = list(itertools.combinations(codes, 2)) or [tuple(codes)]
    best = math.inf
    for subset in sets:
        mi, h = _mi_and_entropy(_tables(v_mu, v_g, _pair_cells(codes, subset, i, j), 2))
        score = float(mi.mean() / h.mean()) if h.mean() > 1e-12 else math.nan
        best = min(best, score) if not math.isnan(score) else best
    return best if math.isfinite(best) else math.nan


def paired_difference(values, baseline, level: float = 0.95, method: str = "bootstrap", n_boot: int = 10000,
                      seed: int = 0) -> dict:
    """Mean difference ``values - baseline`` over paired runs (same seed, same data), with an interval.

    Args:
        values, baseline: (S,) one number per seed (e.g. test error of the method and of its baseline), S >= 2.
        level: coverage of the interval. method: ``"bootstrap"`` (percentile interval of the mean of the S
            differences resampled with replacement, ``n_boot`` resamples from ``seed``) or ``"t"`` (Student-t:
            ``mean +- t_{S-1} * sd / sqrt(S)``).

    Returns:
        ``{"mean", "lo", "hi", "n", "sd", "p"}``: p is the two-sided paired t-test's p-value of a zero mean
        difference (1.0 when every difference is 0, NaN-free).
    """
    a, b = _finite(values, "values"), _finite(baseline, "baseline")
    if a.size != b.size or a.size < 2:
        raise ValueError(f"values and baseline need the same length >= 2 (one per seed), got {a.size} and {b.size}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    from scipy import stats

    d = a - b
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0 else (1.0 if mean == 0 else 0.0)
    if method == "t":
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
        lo, hi = mean - half, mean + half
    elif method == "bootstrap":
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {n_boot}")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, n, (n_boot, n), generator=gen).numpy()
        means = d[idx].mean(axis=1)
        lo, hi = (float(np.quantile(means, q)) for q in ((1 - level) / 2, (1 + level) / 2))
    else:
        raise ValueError(f"method must be 'bootstrap' or 't', got {method!r}")
    return {"mean": mean, "lo": lo, "hi": hi, "n": n, "sd": sd, "p": p}
