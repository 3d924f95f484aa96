"""`geomlat demo`: train a small CNN on scikit-learn's digits and watch label variation fall with depth.

Trains ``SmallCNN`` (width 16) on the bundled digits for a few epochs, then builds the cosine k-NN LGG
(k = 10) of the input, a middle layer (``stage2``) and the penultimate layer (``pool``) on batches of
test samples and prints their normalized label variation: the fraction of edge weight that joins two
classes (0 = classes never touch, 1 = every edge crosses classes). Writes ``figures/demo/label_variation.png``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import LatentCapture, label_variation, latent_graph

LAYERS = {"input": None, "middle (stage2)": "stage2", "penultimate (pool)": "pool"}
#: test samples per LGG (the k-NN graph of a batch needs k < BATCH)
BATCH = 100


class DemoArgumentError(ValueError):
    """A demo option out of range (reported in one line, exit status 2, before any work)."""


def check_args(args: argparse.Namespace) -> None:
    """Raise :class:`DemoArgumentError` naming the first option out of range."""
    if args.epochs < 1:
        raise DemoArgumentError(f"--epochs must be >= 1, got {args.epochs}")
    if not 1 <= args.k < BATCH:
        raise DemoArgumentError(f"--k must be in 1..{BATCH - 1} (neighbors within a batch of {BATCH} test samples), got {args.k}")
    if args.seed < 0:
        raise DemoArgumentError(f"--seed must be >= 0, got {args.seed}")


def layer_label_variation(model, x: torch.Tensor, y: torch.Tensor, k: int, batch_size: int) -> list[dict]:
    """Normalized label variation of each layer in :data:`LAYERS`, one value per test batch.

    Args:
        x: (N, 1, 8, 8) test images; y: (N,) labels. Batches are consecutive slices of ``batch_size``.
    """
    rows = []
    model.eval()
    for start in range(0, len(x) - batch_size + 1, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with torch.no_grad(), LatentCapture(model, [n for n in LAYERS.values() if n], detach=True) as feats:
            model(xb)
        for label, name in LAYERS.items():
            rep = xb if name is None else feats[name]
            g = latent_graph(rep, k=k, kernel="cosine")
            rows.append({"layer": label, "batch": start // batch_size, "label_variation": float(label_variation(g, yb, normalized=True))})
    return rows


def plot(rows: list[dict], path: Path, subtitle: str = "", k: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    from .analysis._style import PALETTE

    sns.barplot(frame, x="layer", y="label_variation", errorbar="sd", color=PALETTE[4], alpha=0.45, ax=ax)  # light bars
    sns.stripplot(frame, x="layer", y="label_variation", color=PALETTE[0], size=4, ax=ax)  # one point per batch
    ax.set_ylabel("normalized label variation\n(share of edge weight across classes)")
    ax.set_xlabel("")
    ax.set_ylim(0, max(0.05, frame.label_variation.max() * 1.15))
    ax.set_title(f"Label variation of the LGG per layer {subtitle}\n(cosine {k}-NN LGG; dots: test batches of 100; bars: mean ± sd)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def run(argv: list[str] | None = None) -> dict:
    """Train, measure and plot; returns ``{layer label: mean normalized label variation}``."""
    parser = argparse.ArgumentParser(prog="geomlat demo", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/demo", help="run folder (checkpoint, metrics)")
    parser.add_argument("--figure", default="figures/demo/label_variation.png")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    check_args(args)

    from .data import load_dataset
    from .engine import TrainConfig, train
    from .models import build_model, count_parameters
    from .objectives import Supervised

    torch.manual_seed(args.seed)
    splits = load_dataset("digits", seed=args.seed)
    model = build_model("small_cnn", width=16, num_classes=splits.num_classes)
    config = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.05, seed=args.seed)
    final = train(Supervised(model), splits, config, Path(args.runs) / f"small_cnn_s{args.seed}", progress=not args.no_progress)
    print(f"SmallCNN ({count_parameters(model):,} parameters): test error {100 * final['test_error']:.2f}% after {args.epochs} epochs")

    x, y = splits.test.tensors
    rows = layer_label_variation(model, x, y, k=args.k, batch_size=BATCH)
    means = {}
    for label in LAYERS:
        values = torch.tensor([r["label_variation"] for r in rows if r["layer"] == label])
        means[label] = float(values.mean())
        print(f"  normalized label variation, {label:>20}: {values.mean():.3f} ± {values.std():.3f} over {len(values)} batches")
    plot(rows, Path(args.figure), f"(digits, SmallCNN, test error {100 * final['test_error']:.1f}%)", k=args.k)
    print(f"figure: {args.figure}")
    return means


def main(argv: list[str] | None = None) -> int:
    """Console entry (``geomlat demo``): exit status 0; 2 with one line on stderr for an option out of range or
    a run folder made with other options (``--epochs``, ``--seed``: delete it or pass another ``--runs``)."""
    from .engine.run_folder import RunFolderMismatch

    try:
        run(argv)
    except (DemoArgumentError, RunFolderMismatch) as err:
        print(f"geomlat demo: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
