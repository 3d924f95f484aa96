"""Compare the layers of two models (or two runs) on the same inputs, with any registered measure.

The measures are those of :mod:`geomlat.analysis.similarity` (``list(SIMILARITIES)``: the CKA family, the
k-NN family, CKNNA, SVCCA, Procrustes and CCA angular distances, RSA, LGG similarity; ``"cka"`` and
``"knn_overlap"`` are the earlier names of linear CKA and cosine mutual k-NN). Several at once: options go
to the measures that take them (``k`` to ``knn_overlap``, ``graph_k``/``kernel`` to ``lgg``, ``topk`` to the
k-NN measures, ...); an option that no selected measure takes is an error.

Calibrated scores (``calibrate=``): ``"difference"`` is the score minus the mean of its row-permutation null
(0 at chance, in the measure's units), ``"zscore"`` that difference over the null's standard deviation; see
:func:`geomlat.analysis.similarity.similarity_null`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..capture import LatentCapture
from ._plot import save_pyplot_figure
from .similarity import (
    CALIBRATIONS,
    SIMILARITIES,
    knn_overlap,
    lgg_similarity,
    linear_cka,
    null_of,
    pair_vectors,
)

METHODS = ("lgg", "cka", "knn_overlap")
__all__ = ["METHODS", "compare_models", "knn_overlap", "layer_similarity", "lgg_similarity", "linear_cka",
           "plot_similarity_heatmaps"]


def _route(names: Sequence[str], options: dict) -> dict[str, dict]:
    """Options of each measure of ``names``: those its function takes; TypeError for an option none takes."""
    measures = [SIMILARITIES[n] for n in names]
    unused = sorted(set(options) - {o for m in measures for o in m.options})
    if unused:
        takes = {m.name: list(m.options) for m in measures}
        raise TypeError(f"no selected measure takes the options {unused}; the measures take {takes}")
    return {m.name: {k: v for k, v in options.items() if k in m.options} for m in measures}


def similarity_tables(feats_a: Mapping[str, Tensor], feats_b: Mapping[str, Tensor], methods: Sequence[str],
                      calibrate: str | None = None, n_permutations: int = 100, seed: int = 0,
                      attention_mask=None, reduce: str | None = None, **options) -> dict[str, dict]:
    """Every measure of ``methods`` between every layer of ``feats_a`` and of ``feats_b``.

    Returns:
        ``{method: {"matrix": (La, Lb) float64 scores, "measure": name, "label": kind and range}}``, plus with
        ``calibrate``: ``"calibrated"``, ``"null_mean"``, ``"null_std"``, ``"p_value"`` (each (La, Lb)) and
        ``"calibrate"`` (the name of the calibration).
    """
    if calibrate is not None and calibrate not in CALIBRATIONS:
        raise ValueError(f"calibrate must be None or one of {list(CALIBRATIONS)}, got {calibrate!r}")
    if not feats_a or not feats_b:
        raise ValueError("feats_a and feats_b must be non-empty dicts {layer name: (B, ...) tensor}")
    routed = _route(methods, options)
    shape = (len(feats_a), len(feats_b))
    keys = ("matrix",) + (("calibrated", "null_mean", "null_std", "p_value") if calibrate else ())
    out = {}
    for name in methods:
        m = SIMILARITIES[name]
        res = {key: torch.zeros(shape, dtype=torch.float64, device="cpu") for key in keys}  # Python floats
        for i, xa in enumerate(feats_a.values()):
            for j, xb in enumerate(feats_b.values()):
                a, b = pair_vectors(xa, xb, attention_mask, reduce)
                if calibrate is None:
                    res["matrix"][i, j] = m(a, b, **routed[name])
                    continue
                null = null_of(m, a, b, n_permutations, seed, routed[name])
                res["matrix"][i, j], res["calibrated"][i, j] = null.score, null.calibrated(calibrate)
                res["null_mean"][i, j], res["null_std"][i, j], res["p_value"][i, j] = null.null_mean, null.null_std, null.p_value
        out[name] = dict(res, measure=name, label=m.label, **({"calibrate": calibrate} if calibrate else {}))
    return out


def layer_similarity(
    feats_a: Mapping[str, Tensor],
    feats_b: Mapping[str, Tensor],
    method: str | Sequence[str] = "lgg",
    *,
    calibrate: str | None = None,
    n_permutations: int = 100,
    seed: int = 0,
    attention_mask=None,
    reduce: str | None = None,
    **options,
) -> Tensor | dict[str, Tensor]:
    """(La, Lb) matrix of ``method`` between every layer of ``feats_a`` and every layer of ``feats_b``.

    Args:
        feats_a, feats_b: ``{layer name: (B, ...) tensor}`` on the same B inputs (dict order = rows/cols).
        method: a registered measure name, or several (then a dict ``{name: matrix}`` is returned).
        calibrate: None (raw scores), ``"difference"`` (score - null mean) or ``"zscore"``.
        n_permutations, seed: of the null (with ``calibrate``); attention_mask, reduce: token features.
        options: measure options, routed by name (module docstring).
    """
    names = [method] if isinstance(method, str) else list(method)
    tables = similarity_tables(feats_a, feats_b, names, calibrate, n_permutations, seed, attention_mask, reduce,
                               **options)
    key = "calibrated" if calibrate else "matrix"
    return tables[method][key] if isinstance(method, str) else {n: t[key] for n, t in tables.items()}


@torch.no_grad()
def _features(model: nn.Module, x: Tensor, layers: list[str]) -> dict[str, Tensor]:
    was_training = model.training
    model.eval()
    try:
        with LatentCapture(model, layers, detach=True) as captured:
            model(x)
        return {name: captured[name] for name in layers}
    finally:
        model.train(was_training)


def compare_models(
    model_a: nn.Module,
    model_b: nn.Module,
    x: Tensor,
    layers_a: Iterable[str],
    layers_b: Iterable[str],
    methods: Iterable[str] = METHODS,
    **options,
) -> dict[str, dict]:
    """Layer-by-layer similarity of two models on the inputs ``x`` (eval mode, no grad), any registered
    measures at once.

    Returns:
        ``{method: {"matrix": (La, Lb) tensor, "layers_a": [...], "layers_b": [...], "measure", "label"}}``
        and, with ``calibrate=``, the null's tables (:func:`similarity_tables`); ``options`` (``calibrate``,
        ``n_permutations``, ``seed``, ``attention_mask``, ``reduce`` and the measures' options) go to
        :func:`similarity_tables`.
    """
    layers_a, layers_b = list(layers_a), list(layers_b)
    fa, fb = _features(model_a, x, layers_a), _features(model_b, x, layers_b)
    tables = similarity_tables(fa, fb, list(methods), **options)
    return {m: dict(t, layers_a=layers_a, layers_b=layers_b) for m, t in tables.items()}


def _heatmap(ax, matrix: Tensor, res: dict, bounds, cmap: str, title: str, names: tuple[str, str]) -> None:
    import seaborn as sns

    lo, hi = bounds if bounds is not None else (float(matrix.min()), float(matrix.max()))
    sns.heatmap(matrix.numpy(), ax=ax, vmin=lo, vmax=hi, annot=True, fmt=".2f", cmap=cmap, center=None,
                xticklabels=res["layers_b"], yticklabels=res["layers_a"], square=True, cbar=False)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])


def plot_similarity_heatmaps(results: Mapping[str, dict], path: str | Path, names: tuple[str, str] = ("model a", "model b"),
                             calibrated: bool = False) -> Path:
    """Seaborn heatmaps of :func:`compare_models` results side by side, saved atomically to ``path``.

    Titles: the keys of ``results`` and, for registered measures, their kind and range (a distance says
    "lower = more alike"); axis labels: ``names`` of the row and column models. ``calibrated=True`` (results
    computed with ``calibrate=``) adds a second row with the calibrated scores (color scale centered on 0).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("results is empty")
    if calibrated and not all("calibrated" in r for r in results.values()):
        raise ValueError("calibrated=True needs results computed with calibrate='difference' or 'zscore'")
    path = Path(path)
    rows = 2 if calibrated else 1
    fig, axes = plt.subplots(rows, len(results), figsize=(4.5 * len(results), 4.3 * rows), squeeze=False)
    for col, (key, res) in enumerate(results.items()):
        m = SIMILARITIES[res["measure"]] if res.get("measure") in SIMILARITIES else None
        sub = "" if m is None else f"\n{m.kind}, {m.range}" + (" (lower = more alike)" if m.kind == "distance" else "")
        bounds = (0.0, 1.0) if m is None else m.bounds
        _heatmap(axes[0, col], res["matrix"], res, bounds, "viridis" if m is None or m.kind == "similarity" else "viridis_r",
                 f"{key}{sub}", names)
        if calibrated:
            cal = res["calibrated"]
            span = max(float(cal.abs().max()), 1e-12)
            what = "score - null mean" if res["calibrate"] == "difference" else "z-score (score - null mean) / null std"
            _heatmap(axes[1, col], cal, res, (-span, span), "coolwarm" if m is None or m.kind == "similarity" else "coolwarm_r",
                     f"{key}: {what}", names)
    fig.tight_layout()
    return save_pyplot_figure(fig, path)
