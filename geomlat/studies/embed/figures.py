"""The figure of an ``embed`` study: 2-D training embeddings across epochs (the paper's Figure A1)."""
from __future__ import annotations

from pathlib import Path

import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from ...io import load_checkpoint
from ..figures import save_figure, series_styles

__all__ = ["embeddings_figure"]


def embeddings_figure(spec, ctx, y_fig: Tensor) -> Path:
    fig_spec, seed = spec["figure"], spec["seeds"][0]
    names, epochs = fig_spec["methods"], fig_spec["epochs"]
    with sns.axes_style("white"):
        fig = Figure(figsize=(2.6 * len(epochs), 2.7 * len(names) + 0.4), layout="constrained")
        axes = fig.subplots(len(names), len(epochs), squeeze=False)
    classes = sorted(int(c) for c in y_fig.unique())
    styles = dict(zip(classes, series_styles(len(classes))))  # (color, marker) per class
    labels_np = y_fig.numpy()
    for i, name in enumerate(names):
        for j, epoch in enumerate(epochs):
            ax = axes[i, j]
            path = ctx.runs_dir / f"{name}_s{seed}" / "embeddings" / f"epoch_{epoch}.pt"
            if path.exists():
                emb = load_checkpoint(path)["embedding"].numpy()
                for c in classes:
                    sel = labels_np == c
                    ax.scatter(emb[sel, 0], emb[sel, 1], color=styles[c][0], marker=styles[c][1], s=7, alpha=0.75,
                               linewidths=0)
            else:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"epoch {epoch}" + (" (init)" if epoch == 0 else ""))
            if j == 0:
                ax.set_ylabel(spec["methods"][name]["label"], fontsize=9)
    handles = [Line2D([], [], ls="", color=styles[c][0], marker=styles[c][1], ms=6, label=f"class {c}") for c in classes]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(classes), fontsize=9, frameon=False,
               handletextpad=0.2, columnspacing=1.0)
    fig.suptitle(f"2-D embeddings of {len(y_fig)} training points ({spec['data']['name']}, seed {seed}; "
                 "color and marker = class)")
    ctx.figures_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, ctx.figures_dir / "embeddings_2d.png")
