"""The figures of a ``manifold`` study: NNK LOO error vs test error, manifold graph metrics, label
spectra, comparison heatmaps."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...analysis import plot_similarity_heatmaps
from ..common import INPUT, train_config_from_fields
from ..figures import PALETTE, new_figure, save_figure, series_styles

__all__ = ["figures"]


def figures(spec, ctx, rows, spectra, selection, comparison, num_classes, width_rows) -> list[Path]:
    train_config = train_config_from_fields(spec["train"], "train")
    milestones = train_config.milestone_epochs() if train_config.scheduler == "multistep" else []  # lr drops
    layers = spec["layers"]
    layer_styles = dict(zip(layers, series_styles(len(layers))))  # (color, marker) per layer, in every figure
    colors = {n: c for n, (c, _) in layer_styles.items()}
    markers = {n: m for n, (_, m) in layer_styles.items()}
    by_layer = {n: [r for r in rows if r["layer"] == n] for n in layers}
    first = by_layer[layers[0]]
    ep = [r["epoch"] for r in first]
    paths = []

    # (1) NNK LOO error beside the test error
    fig, axes = new_figure(ncols=2, width=5.6, height=4.2)
    ax = axes[0]
    ax.plot(ep, [100 * r["test_error"] for r in first], color="black", lw=2.2, label="test error")
    ax.plot(ep, [100 * r["train_error"] for r in first], color="0.5", lw=1.5, ls="--", label="train error (eval mode)")
    for n in layers:
        ax.plot(ep, [100 * r["nnk_loo_error"] for r in by_layer[n]], color=colors[n], marker=markers[n], ms=3.5, lw=1.2,
                label=f"NNK LOO, {n}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
    ticks = [t for t in (0.2, 0.5, 1, 2, 5, 10, 20, 50) if t <= 100 * max(r["test_error"] for r in first) * 1.5]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    for i, m in enumerate(milestones):
        ax.axvline(m + 0.5, color="0.7", lw=0.8, ls=":", label="lr drop" if i == 0 else None)
    ax.set_title("NNK leave-one-out error on training samples\nbeside the test error", fontsize=10)
    ax.legend(fontsize=7, ncols=2)
    ax = axes[1]
    sel = [s for s in selection if s["signal"] in ("NNK LOO error", "k-NN LOO error")]
    names = [n for n in layers if n != INPUT]
    width = 0.38
    xs = np.arange(len(names))
    for off, sig, col in ((-width / 2, "NNK LOO error", PALETTE[0]), (width / 2, "k-NN LOO error", PALETTE[1])):
        vals = [next(s["spearman"] for s in sel if s["signal"] == sig and s["layer"] == n) for n in names]
        ax.bar(xs + off, np.nan_to_num(vals), width, color=col, label=sig)
    tr = next(s for s in selection if s["signal"].startswith("train error"))["spearman"]
    ax.axhline(tr if math.isfinite(tr) else 0.0, color="0.5", ls="--", label=f"train error ({tr:.2f})")
    ax.set_xticks(xs, names)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("Spearman rho with the test error")
    ax.set_title("rank correlation across epochs\n(1 = ranks epochs like the test error)", fontsize=10)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, ctx.figures_dir / "nnk_loo_vs_test.png"))

    # (2) manifold graph metrics per layer and epoch
    fig, axes = new_figure(ncols=3, width=4.2, height=3.8)
    panels = (("nnk_neighbors", "NNK neighbors per node", "NNK neighbors per node (mean)"),
              ("diameter", "NNK polytope diameter", "polytope diameter (mean over nodes)"),
              ("local_dim", "local dimension (90% energy)", "local dimension (mean over nodes)"))
    for ax, (key, title, ylabel) in zip(axes, panels):
        for n in layers:
            ax.plot(ep, [r[key] for r in by_layer[n]], color=colors[n], marker=markers[n], ms=3.5, label=n)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} (mean over nodes)", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"Manifold graph metrics of the NNK graphs ({spec['analysis']['kernel']} kernel, k = {spec['analysis']['nnk_k']}) "
                 f"of {spec['analysis']['samples']} training samples", fontsize=10)
    paths.append(save_figure(fig, ctx.figures_dir / "manifold_metrics.png"))

    # (3) label spectra
    paths.append(_label_spectra_figure(spec, ctx, spectra, num_classes, ep, by_layer, colors, markers))

    # (4) comparison heatmaps
    names = {"lgg": "LGG similarity (full graphs)", "lgg_knn": f"LGG similarity ({spec['comparison']['lgg_k']}-NN graphs)",
             "cka": "linear CKA", "knn_overlap": f"mutual {spec['comparison']['knn_k']}-NN overlap"}
    renamed = {names.get(m, m): r for m, r in comparison.items()}
    a, b = width_rows
    paths.append(plot_similarity_heatmaps(renamed, ctx.figures_dir / "comparison.png",
                                          names=(f"{a['name']} (A)", f"{b['name']} (B)")))
    return paths


def _label_spectra_figure(spec, ctx, spectra, num_classes, ep, by_layer, colors, markers) -> Path:
    """Figure (3): the cumulative label energy over the lowest graph frequencies, and its low-frequency share
    per epoch, for every layer."""
    layers = spec["layers"]
    fig, axes = new_figure(ncols=2, width=5.6, height=4.2)
    ax = axes[0]
    styles = dict(zip(sorted(spec["analysis"]["spectrum_epochs"]), ["--", "-", ":", "-."] * 4))
    for epoch, n in sorted(spectra, key=lambda en: (en[0], layers.index(en[1]))):
        _, energy = spectra[(epoch, n)]
        if n == INPUT and epoch != min(styles):
            continue
        cum = np.cumsum(energy) / energy.sum()
        ax.plot(np.arange(1, len(cum) + 1), cum, color=colors[n], ls=styles[epoch], lw=1.4, marker=markers[n], ms=3.5,
                markevery=0.12, label=n if n == INPUT else f"{n}, epoch {epoch}")
    ax.axvline(num_classes, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("number of lowest graph frequencies (eigenvectors of L = D - A)")
    ax.set_ylabel("cumulative share of label energy")
    ax.set_title(f"label-signal energy in the lowest graph frequencies\n(dotted: {num_classes} = number of classes; "
                 "higher = smoother labels)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    for n in layers:
        ax.plot(ep, [r["low_freq_share"] for r in by_layer[n]], color=colors[n], marker=markers[n], ms=3.5, label=n)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"label energy in the {num_classes} lowest frequencies")
    ax.set_ylim(0, 1.02)
    ax.set_title("low-frequency share of the labels per epoch\n(1 = the classes are the connected components)", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(f"Label spectra on the cosine {spec['analysis']['graph_k']}-NN LGG of {spec['analysis']['samples']} training samples",
                 fontsize=10)
    return save_figure(fig, ctx.figures_dir / "label_spectra.png")
