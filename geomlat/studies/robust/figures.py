"""The figure of a ``robust`` study: error vs corruption severity per method."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import new_figure, save_figure, series_styles

__all__ = ["severity_figure", "tuning_figure"]


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


def tuning_figure(tune, spec, rows):
    """The validation grid of ``--tune``: clean vs FGSM and clean vs PGD error of every setting (log axes),
    the chosen setting of each method circled."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    methods = list(dict.fromkeys(r["method"] for r in rows))
    styles = dict(zip(methods, series_styles(len(methods))))
    fig, axes = new_figure(2, width=5.5, height=4.6)
    for ax, attack, title in ((axes[0], "fgsm", f"FGSM ({spec['attacks']['fgsm_snr_db']:g} dB SNR)"),
                              (axes[1], "pgd", f"PGD-{spec['attacks']['pgd_steps']} eps={spec['attacks']['pgd_eps']:.3g}")):
        for m in methods:
            color, marker = styles[m]
            rs = [r for r in rows if r["method"] == m]
            ax.scatter([100 * r["clean"] for r in rs], [100 * r[attack] for r in rs], color=color, marker=marker,
                       label=rs[0]["label"], s=36, alpha=0.8)
            for r in rs:  # labels on the chosen settings and the outliers only (all values: grid.csv)
                if r["chosen"]:
                    ax.scatter([100 * r["clean"]], [100 * r[attack]], s=160, facecolors="none", edgecolors=color, linewidths=2)
                if r["chosen"] or r["clean"] > 0.05:
                    ax.annotate(r["setting"], (100 * r["clean"], 100 * r[attack]), fontsize=6, color=color,
                                xytext=(4, -8 if r["chosen"] else 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(FixedLocator([0.5, 1, 2, 5, 10, 20, 50, 100]))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("validation clean error (%)")
        ax.set_ylabel(f"validation {title} error (%)")
        ax.set_title(f"clean vs {title}")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Validation grid of the {spec['name']} study (mean over seeds {tune['seeds']}; circled: chosen; log axes)")
    return fig
