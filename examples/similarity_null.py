"""
Raw and calibrated representation similarity
============================================

A score next to its chance level.

(a) Independent Gaussian representations (nothing shared) of N = 200 inputs: the raw linear CKA grows with
the width d alone (from 0.02 at d = 4 to 0.84 at d = 1024), and the mean of its permutation null with it, so
the calibrated score (score - null mean) stays at 0; mutual k-NN stays at its chance level k / (N - 1). (b, c) The layers of two MLPs of widths 32 and 512 (random weights) on
the same 200 inputs, every layer pair: raw score, null mean and calibrated score side by side.

Usage: ``python examples/similarity_null.py [--out figures/examples/similarity_null.png]`` (a few minutes on
2 CPU cores).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geomlat.analysis import compare_models, similarity_null

N, PERMUTATIONS = 200, 50
MEASURES = {"linear_cka": {}, "mutual_knn": {"topk": 10}}


def width_sweep(widths=(4, 16, 64, 256, 1024)) -> dict:
    """Raw score and null mean of independent pairs per width (mean over 3 pairs)."""
    out = {m: {"raw": [], "null": []} for m in MEASURES}
    for d in widths:
        for m, opts in MEASURES.items():
            runs = []
            for seed in range(3):
                g = torch.Generator().manual_seed(100 * d + seed)
                x, y = torch.randn(N, d, generator=g), torch.randn(N, d, generator=g)
                runs.append(similarity_null(x, y, m, PERMUTATIONS, seed, **opts))
            out[m]["raw"].append(np.mean([r.score for r in runs]))
            out[m]["null"].append(np.mean([r.null_mean for r in runs]))
    return {"widths": list(widths), **out}


def mlp(width: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def layer_pairs() -> tuple[dict, list[str]]:
    g = torch.Generator().manual_seed(0)
    centers = 3.0 * torch.randn(4, 20, generator=g)
    x = centers[torch.randint(0, 4, (N,), generator=g)] + torch.randn(N, 20, generator=g)
    layers = ["1", "3", "4"]
    res = compare_models(mlp(32, 1), mlp(512, 2), x, layers, layers, methods=list(MEASURES), calibrate="difference",
                         n_permutations=PERMUTATIONS, seed=0, topk=10)
    names = {"1": "h1", "3": "h2", "4": "out"}
    pairs = [f"{names[a]}/{names[b]}" for a in layers for b in layers]
    return res, pairs


def figure(sweep: dict, res: dict, pairs: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1, 1.3, 1.3]})
    ax = axes[0]
    for (m, style), color in zip((("linear_cka", "o"), ("mutual_knn", "s")), ("#0072B2", "#D55E00")):
        raw, null = np.array(sweep[m]["raw"]), np.array(sweep[m]["null"])
        ax.plot(sweep["widths"], raw, f"{style}-", color=color, label=f"{m}: raw score")
        ax.plot(sweep["widths"], null, f"{style}:", color=color, label=f"{m}: null mean")
        ax.plot(sweep["widths"], raw - null, f"{style}--", color=color, alpha=0.6, label=f"{m}: score - null mean")
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="width d of both (independent) representations", ylabel="score")
    ax.set_title(f"(a) independent pairs, N = {N}: raw CKA grows with width,\nscore - null mean stays at 0", fontsize=10)
    ax.legend(fontsize=7)
    for ax, m, tag in zip(axes[1:], MEASURES, "bc"):
        r = res[m]
        pos = np.arange(len(pairs))
        for off, key, color, lab in ((-0.27, "matrix", "#0072B2", "raw score"), (0.0, "null_mean", "#999999", "null mean"),
                                      (0.27, "calibrated", "#009E73", "score - null mean")):
            ax.bar(pos + off, r[key].flatten().numpy(), 0.27, color=color, label=lab)
        ax.set_xticks(pos, pairs, rotation=45, fontsize=8)
        ax.set(xlabel="layer pair (MLP width 32 / MLP width 512)", ylabel=m,
               title=f"({tag}) {m} across layer pairs, {PERMUTATIONS} permutations")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("figures/examples/similarity_null.png"))
    args = parser.parse_args(argv)
    sweep = width_sweep()
    res, pairs = layer_pairs()
    for m in MEASURES:
        print(m, "independent pairs, widths", sweep["widths"], "raw", np.round(sweep[m]["raw"], 3),
              "null mean", np.round(sweep[m]["null"], 3))
        print(m, "layer pairs", pairs, "raw", res[m]["matrix"].flatten().numpy().round(3),
              "calibrated", res[m]["calibrated"].flatten().numpy().round(3), "p", res[m]["p_value"].flatten().numpy().round(3))
    print("wrote", figure(sweep, res, pairs, args.out))


if __name__ == "__main__":
    main()
