"""Compare the layers of two models (or two runs) on the same inputs.

Methods (each gives a similarity in [0, 1], 1 for identical representations):

- ``"lgg"``: cosine similarity ``<A_a, A_b>_F / (|A_a|_F |A_b|_F)`` between the normalized LGGs
  ``D^-1/2 A D^-1/2`` of the two layers (Lassance et al., LGG paper; full graph by default, no
  self-loops). Graphs are B x B, so layers of any widths compare. For non-negative weights it lies in
  [0, 1] and equals 1 iff the graphs are proportional.
- ``"cka"``: linear CKA (Kornblith et al. 2019), ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear
  Gram matrices; the biased HSIC estimator of the paper by default (``unbiased=True``: Song et al. 2012).
- ``"knn_overlap"``: mean over points of ``|N_a(i) ∩ N_b(i)| / k``, N the cosine k-NN sets (symmetric).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_features
from ..capture import LatentCapture
from ..graphs import latent_adjacency
from ..knn import knn
from ._plot import save_pyplot_figure

METHODS = ("lgg", "cka", "knn_overlap")


def _gram_hsic(K: Tensor, L: Tensor, unbiased: bool) -> Tensor:
    n = K.shape[0]
    if not unbiased:
        H = torch.eye(n, dtype=K.dtype, device=K.device) - 1.0 / n
        return (H @ K @ H * L).sum() / (n - 1) ** 2
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 samples, got {n}")
    K = K - torch.diag_embed(K.diagonal())
    L = L - torch.diag_embed(L.diagonal())
    one = torch.ones(n, dtype=K.dtype, device=K.device)
    term = (K * L).sum() + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (one @ K @ L @ one)
    return term / (n * (n - 3))


def linear_cka(x: Tensor, y: Tensor, unbiased: bool = False) -> float:
    """Linear CKA between (B, ...) representations of the same B inputs (Kornblith et al. 2019).

    Invariant to orthogonal transforms and isotropic scaling of either representation. Computed from
    the B x B Gram matrices in float64 (any widths).
    """
    a, b = check_features(x, "x").double(), check_features(y, "y").double()
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"x and y must describe the same inputs, got {a.shape[0]} and {b.shape[0]} rows")
    K, L = a @ a.T, b @ b.T
    den = (_gram_hsic(K, K, unbiased) * _gram_hsic(L, L, unbiased)).sqrt()
    if float(den) == 0.0:
        raise ValueError("CKA is undefined for a constant representation (zero variance)")
    return float(_gram_hsic(K, L, unbiased) / den)


def lgg_similarity(x: Tensor, y: Tensor, k: int | None = None, kernel: str = "auto") -> float:
    """Cosine similarity of the normalized LGGs of two layers (see module docstring)."""
    a, _ = latent_adjacency(x.detach().double(), k=k, kernel=kernel, normalize="sym")
    b, _ = latent_adjacency(y.detach().double(), k=k, kernel=kernel, normalize="sym")
    den = a.norm() * b.norm()
    return float((a * b).sum() / den) if float(den) > 0 else 0.0


def knn_overlap(x: Tensor, y: Tensor, k: int = 10) -> float:
    """Mean fraction of shared cosine k-NN between two representations of the same points."""
    na, nb = knn(x.detach(), k), knn(y.detach(), k)
    shared = (na[:, :, None] == nb[:, None, :]).any(-1).sum(1)
    return float(shared.double().mean() / k)


def layer_similarity(
    feats_a: Mapping[str, Tensor],
    feats_b: Mapping[str, Tensor],
    method: str = "lgg",
    k: int = 10,
    graph_k: int | None = None,
    kernel: str = "auto",
    unbiased: bool = False,
) -> Tensor:
    """(La, Lb) similarity matrix between every layer of ``feats_a`` and every layer of ``feats_b``.

    Args:
        feats_a, feats_b: ``{layer name: (B, ...) tensor}`` on the same B inputs (dict order = rows/cols).
        method: ``"lgg"``, ``"cka"`` or ``"knn_overlap"`` (module docstring).
        k: neighbours for ``"knn_overlap"``; graph_k: k of the LGGs for ``"lgg"`` (None: full graph);
        kernel: LGG kernel; unbiased: CKA estimator.
    """
    check_choice(method, "method", METHODS)
    if not feats_a or not feats_b:
        raise ValueError("feats_a and feats_b must be non-empty dicts {layer name: (B, ...) tensor}")
    out = torch.zeros(len(feats_a), len(feats_b), dtype=torch.float64, device="cpu")  # Python floats
    for i, xa in enumerate(feats_a.values()):
        for j, xb in enumerate(feats_b.values()):
            if xa.shape[0] != xb.shape[0]:
                raise ValueError(f"layers hold different numbers of inputs ({xa.shape[0]} vs {xb.shape[0]})")
            if method == "lgg":
                out[i, j] = lgg_similarity(xa, xb, graph_k, kernel)
            elif method == "cka":
                out[i, j] = linear_cka(xa, xb, unbiased)
            else:
                out[i, j] = knn_overlap(xa, xb, k)
    return out


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
    """Layer-by-layer similarity of two models on the inputs ``x`` (eval mode, no grad).

    Returns:
        ``{method: {"matrix": (La, Lb) tensor, "layers_a": [...], "layers_b": [...]}}``; ``options`` go to
        :func:`layer_similarity`.
    """
    layers_a, layers_b = list(layers_a), list(layers_b)
    fa, fb = _features(model_a, x, layers_a), _features(model_b, x, layers_b)
    return {
        m: {"matrix": layer_similarity(fa, fb, m, **options), "layers_a": layers_a, "layers_b": layers_b}
        for m in methods
    }


def plot_similarity_heatmaps(results: Mapping[str, dict], path: str | Path, names: tuple[str, str] = ("model a", "model b")) -> Path:
    """Seaborn heatmaps of :func:`compare_models` results side by side (titles: the keys of ``results``;
    axis labels: ``names`` of the row and column models), saved atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not results:
        raise ValueError("results is empty")
    path = Path(path)
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 4), squeeze=False)
    for ax, (method, res) in zip(axes[0], results.items()):
        sns.heatmap(res["matrix"].numpy(), ax=ax, vmin=0, vmax=1, annot=True, fmt=".2f", cmap="viridis",
                    xticklabels=res["layers_b"], yticklabels=res["layers_a"], square=True, cbar=False)
        ax.set_title(method)
        ax.set_xlabel(names[1])
        ax.set_ylabel(names[0])
    fig.tight_layout()
    return save_pyplot_figure(fig, path)
