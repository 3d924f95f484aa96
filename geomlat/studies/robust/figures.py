"""The figure of a ``robust`` study: error vs corruption severity per method."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import new_figure, save_figure, series_styles

__all__ = ["severity_figure"]


def severity_figure(spec, ctx, results) -> Path:
    fig, ax = new_figure(1, width=6.5, height=4.2)
    sev = [0] + list(spec["corruptions"]["severities"])
    for (color, marker), (name, method) in zip(series_styles(len(spec["methods"])), spec["methods"].items()):
        curves = []
        for seed in spec["seeds"]:
            r = results[(name, seed)]
            by_sev = np.mean([r["corruptions"][c] for c in spec["corruptions"]["names"]], axis=0)
            curves.append([r["clean_cor"]] + list(by_sev))
        curves = 100 * np.asarray(curves)
        med = np.median(curves, axis=0)
        ax.plot(sev, med, "-", marker=marker, color=color, label=method["label"])
        if len(curves) > 1:
            ax.fill_between(sev, curves.min(0), curves.max(0), color=color, alpha=0.15)
    ax.set_xticks(sev)
    ax.set_xticklabels(["clean"] + [str(s) for s in sev[1:]])
    ax.set_xlabel("corruption severity")
    ax.set_ylabel(f"test error (%), mean over {len(spec['corruptions']['names'])} corruptions")
    ax.set_title(f"Error vs corruption severity ({spec['data']['name']})\nmedian over seeds, band = min-max over seeds")
    ax.legend()
    ctx.figures_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, ctx.figures_dir / "error_vs_severity.png")
