"""The figures of a ``distill`` study: (a) consistency with the teacher, (b) label variation per block,
(c) GKD's graph variants."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from ..figures import PALETTE, new_figure, save_figure, series_styles

__all__ = ["figures"]


def figures(spec, ctx, per_run, analysis) -> list[Path]:
    labels = {"teacher": "Teacher", **{m: v["label"] for m, v in spec["methods"].items()}}
    a = spec["analysis"]
    # one color per network, the same in every figure; the networks shown in the figures come first
    shown = dict.fromkeys(["teacher", spec["baseline"], *a["consistency"], *a["variation"], *a["graph_variants"], *labels])
    styles = dict(zip((labels[m] for m in shown), series_styles(len(shown))))
    colors = {name: c for name, (c, _) in styles.items()}
    df = pd.DataFrame(analysis)
    runs = pd.DataFrame(per_run)
    paths = []
    block_names = [f"block {i + 1}\n({t} / {s})" for i, (t, s) in enumerate(a["blocks"])]

    # (a) consistency with the teacher, block by block, and at the output
    cons = df[df["analysis"] == "consistency"].copy()
    if not cons.empty:
        cons["model"] = cons["method"].map(labels)
        fig, ax = new_figure(width=8.0, height=4.2)
        order = [labels[m] for m in a["consistency"]]
        sns.pointplot(data=cons, x="block", y="value", hue="model", hue_order=order, ax=ax, palette=colors,
                      estimator="median", errorbar=("pi", 100), dodge=0.3, markers=[styles[m][1] for m in order], capsize=0.1,
                      linewidth=1.5)
        ax.set_xticks(range(len(block_names) + 1), block_names + ["output\n(predicted class)"])
        ax.set_xlabel("")
        ax.set_ylabel("agreement with the teacher")
        ax.set_title(f"(a) Consistency of the student's decisions with the teacher's, block by block\n"
                     f"leave-one-out {a['k']}-NN on each block's LGG ({a['samples']} test samples); "
                     f"median and range over {len(spec['seeds'])} seeds", fontsize=10)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="student", frameon=False)
        paths.append(save_figure(fig, ctx.figures_dir / "consistency.png"))

    # (b) normalized label variation per block
    lv = df[df["analysis"] == "label_variation"].copy()
    if not lv.empty:
        lv["model"] = lv["method"].map(labels)
        fig, ax = new_figure(width=8.0, height=4.2)
        order = ["Teacher"] + [labels[m] for m in a["variation"]]
        sns.pointplot(data=lv, x="block", y="value", hue="model", hue_order=order, ax=ax, palette=colors,
                      estimator="median", errorbar=("pi", 100), dodge=0.3, markers=[styles[m][1] for m in order], capsize=0.1,
                      linewidth=1.5)
        ax.set_xticks(range(len(block_names)), block_names)
        ax.set_xlabel("")
        ax.set_ylabel("normalized label variation\n(fraction of edge weight between classes)")
        ax.set_title(f"(b) Normalized label variation of each block's {a['k']}-NN LGG (lower = classes better separated)\n"
                     f"{a['samples']} test samples; median and range over {len(spec['seeds'])} seeds", fontsize=10)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="network", frameon=False)
        paths.append(save_figure(fig, ctx.figures_dir / "label_variation.png"))

    # (c) full / inter-class / intra-class graphs
    variants = a["graph_variants"]
    if variants:
        sub = runs[runs["method"].isin(variants)].copy()
        sub["model"] = sub["method"].map(labels)
        sub["error"] = 100 * sub["test_error"]
        order = [labels[m] for m in variants]
        fig, ax = new_figure(width=7.5, height=4.2)
        # swarm: deterministic placement (a strip plot's jitter would draw from NumPy's global RNG)
        sns.swarmplot(data=sub, x="model", y="error", order=order, ax=ax, color="0.35", size=7, alpha=0.8, label="one seed")
        medians = sub.groupby("model")["error"].median().reindex(order)
        ax.scatter(range(len(order)), medians.values, marker="_", s=900, linewidths=3, color=PALETTE[5], zorder=5, label="median over seeds")
        refs = [(ref, style, 100 * runs[runs["method"] == ref]["test_error"].median())
                for ref, style in (("teacher", ":"), (spec["baseline"], "--"))]
        for ref, style, value in refs:
            ax.axhline(value, ls=style, color="0.5", lw=1.2, label=f"{labels[ref]} (median)")
        values = [*sub["error"], *(v for _, _, v in refs)]
        pad = 0.08 * (max(values) - min(values) or 1.0)
        ax.set_ylim(min(values) - pad, max(values) + pad)  # reference lines inside the frame
        handles, names = ax.get_legend_handles_labels()
        keep = dict(zip(names, handles))  # one legend entry per label
        ax.legend(keep.values(), keep.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, markerscale=0.6)
        ax.set_xlabel("graph used by GKD")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"(c) Test error of GKD with the full, inter-class and intra-class graphs\n"
                     f"one point per seed ({len(spec['seeds'])} seeds)", fontsize=10)
        paths.append(save_figure(fig, ctx.figures_dir / "graph_variants.png"))
    return paths
