"""Layer-wise analyses of the GKD talk: label variation per layer, LOO k-NN decisions on each LGG, and
consistency of the student's decisions with the teacher's, block by block (analyses (a) and (b))."""
from __future__ import annotations

from typing import Iterable, Mapping

import torch.nn.functional as F
from torch import Tensor

from .._checks import check_labels
from ..graphs import feature_vectors, latent_adjacency, latent_graph
from ..signals import label_variation
from ._plot import save_pyplot_figure


def layer_label_variation(
    features: Mapping[str, Tensor], labels: Tensor, k: int | None = None, normalized: bool = True, kernel: str = "auto",
    *, attention_mask: Tensor | None = None, reduce: str | None = None,
) -> dict[str, float]:
    """``{layer: label variation of its LGG}`` (``normalized``: divided by the total edge weight).

    Args:
        features: ``{layer: (B, ...) features}``, or (B, T, H) token features with ``attention_mask``; an
            empty dict is a ``ValueError`` (as in :func:`geomlat.nnk.nnk_layer_errors`).
        labels: (B,) integer classes; k, kernel: the LGG (``"auto"``: geomlat's default-kernel rule).
        attention_mask: (B, T), 1 on real tokens (Hugging Face's convention); reduce: how tokens become one
            vector (:func:`geomlat.sequences.sample_vectors`: the mean of the real tokens by default with a
            mask; a 3-D input without either is flattened with geomlat's warning). Padding never matters.
    """
    if not features:
        raise ValueError("layer_label_variation: features is empty: pass a dict {layer name: (B, ...) tensor}")
    out = {}
    for name, x in features.items():
        flat = feature_vectors(x.detach(), attention_mask, reduce, f"layer_label_variation: features[{name!r}]")
        out[name] = float(label_variation(latent_graph(flat, k=k, kernel=kernel), labels, normalized=normalized))
    return out


def knn_decisions(x: Tensor, labels: Tensor, k: int, kernel: str = "auto", symmetrize: str = "max", *,
                  attention_mask: Tensor | None = None, reduce: str | None = None) -> Tensor:
    """Leave-one-out k-NN decisions on a layer's LGG: ``argmax_c sum_j A_ij [y_j = c]`` -> (B,) labels
    (``attention_mask``, ``reduce``: token features, as :func:`layer_label_variation`).

    The LGG has no self-loops, so a sample never votes for itself. Ties (and a vertex with zero total
    weight) go to the smallest class index.
    """
    adj, _ = latent_adjacency(x.detach(), k=k, kernel=kernel, symmetrize=symmetrize, reduce=reduce,
                              attention_mask=attention_mask)
    y = check_labels(labels, adj.shape[0]).to(adj.device)
    votes = adj @ F.one_hot(y, int(y.max()) + 1).to(adj.dtype)
    return votes.argmax(dim=1)


def decision_consistency(
    feats_student: Mapping[str, Tensor],
    feats_teacher: Mapping[str, Tensor],
    pairs: Iterable[tuple[str, str]],
    labels: Tensor,
    k: int,
    kernel: str = "auto",
) -> dict[tuple[str, str], float]:
    """Fraction of samples on which the LOO k-NN decisions of a student block and of the teacher's matching
    block agree, for each ``(student layer, teacher layer)`` pair (GKD talk, analysis (a))."""
    out = {}
    for s, t in pairs:
        if s not in feats_student or t not in feats_teacher:
            raise KeyError(f"pair ({s!r}, {t!r}): unknown layer; student has {list(feats_student)}, teacher {list(feats_teacher)}")
        ds = knn_decisions(feats_student[s], labels, k, kernel)
        dt = knn_decisions(feats_teacher[t], labels, k, kernel)
        out[(s, t)] = float((ds == dt).double().mean())
    return out


def plot_layer_curves(values: Mapping[str, Mapping[str, float]], path, ylabel: str = "label variation"):
    """Line plot of ``{model: {layer: value}}`` (one line per model), saved atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._style import series_styles

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (color, marker), (model, per_layer) in zip(series_styles(len(values)), values.items()):
        ax.plot(list(per_layer), list(per_layer.values()), color=color, marker=marker, label=model)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("layer")
    ax.legend()
    fig.tight_layout()
    return save_pyplot_figure(fig, path)
