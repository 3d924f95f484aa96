"""Figures of the ``selection`` study: each measure against the test error, and the tau per hyperparameter axis."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..figures import PALETTE, save_figure
from .report import GRAN_AXES, oriented, targets

__all__ = ["write_figures"]


def write_figures(records: list[dict], rows: list[dict], figures_dir: Path) -> list[Path]:
    """``measures_vs_test.png`` (one scatter panel per measure, tau in the title) and ``tau_per_axis.png`` (heatmap)."""
    import seaborn as sns
    from matplotlib.figure import Figure

    test, _ = targets(records)
    noise = sorted({r["label_noise"] for r in records})
    colors = dict(zip(noise, sns.color_palette(PALETTE, len(noise))))
    cand = [r for r in rows if r["key"] != "last"]
    ncols = 4
    nrows = math.ceil(len(cand) / ncols)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(3.4 * ncols, 2.9 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, row in zip(axes, cand):
            raw = oriented(records, row["key"], 1)
            for p in noise:
                sel = np.array([r["label_noise"] == p for r in records])
                ax.scatter(raw[sel], 100 * test[sel], s=12, color=colors[p], label=f"label noise {p:g}")
            ax.set_title(f"{row['measure']}\ntau = {row['tau_test']:+.2f}" + (" (negated)" if row["sign"] < 0 else ""), fontsize=8)
            ax.set_ylabel("test error (%)", fontsize=8)
        for ax in axes[len(cand):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(noise), frameon=False)
        fig.suptitle(f"Each measure (raw value, x) vs test error over {len(records)} models (final snapshot); "
                     "tau of the oriented measure with the test error", fontsize=10)
    paths = [save_figure(fig, figures_dir / "measures_vs_test.png")]

    cols = ["all models", *GRAN_AXES, "Psi"]
    data = np.array([[r["tau_test"], *[r[f"gk_{a}"] for a in GRAN_AXES], r["psi"]] for r in cand], dtype=float)
    with sns.axes_style("white"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(9.5, 0.42 * len(cand) + 1.8), layout="constrained")
        ax = fig.subplots()
        sns.heatmap(data, ax=ax, cmap="vlag", center=0, vmin=-1, vmax=1, annot=True, fmt="+.2f", annot_kws={"fontsize": 7},
                    xticklabels=cols, yticklabels=[r["measure"] for r in cand], cbar_kws={"label": "Kendall tau with test error"})
        ax.set_title("Kendall tau with the test error: whole population and per hyperparameter axis (granulated)", fontsize=9)
    paths.append(save_figure(fig, figures_dir / "tau_per_axis.png"))
    return paths
