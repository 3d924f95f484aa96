"""Why label variation in 2-D fails on the embed quick profile: per-epoch diagnostics of the 2-D LV objective.

``python -m geomlat.studies.tools.lv_diagnosis [--out .]`` (part of ``make tune-embed``) trains the ``lv_2d`` method
of ``studies/embed.toml`` (quick profile, seed 0) once per setting of its validation grid (``[tune]``: kernel,
bandwidth rule, k), and the 2-D cross-entropy bottleneck as a reference, on the training set minus the validation
split, and records after every epoch, on a fixed class-balanced subset of 640 training points cut into the
training batches' size (64):

- ``loss``: the objective on those batches (the normalized inter-class edge weight share, in [0, 1]); for the
  cross-entropy reference, the paper's label variation (RBF, bandwidth from the batch) of its 2-D bottleneck;
- ``reach``: the fraction of same-class pairs of a batch whose edge weight exceeds 0.01. The normalized loss
  decreases by pulling same-class points together only where their edge weight is not ~0: pairs out of reach
  exert no gradient on each other;
- ``spread``: mean distance of a point to its class mean divided by the mean distance between class means
  (classes are separated when it is small);
- ``train_loo_knn``: the leave-one-out k-NN error on those training points (the embedding of the training data);
- ``val_knn``: the k-NN (k = the spec's ``knn_k``) validation error of the embedding.

Writes ``results/embed/lv2d_diagnosis.csv`` (+ ``.md``: first and last epoch of each setting) and
``figures/embed/lv2d_diagnosis.png`` (the curves and the final embeddings). The test set is not used.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...classifiers import KNNClassifier, embed
from ...engine import train
from ...io import atomic_save, load_checkpoint
from ...losses.embedding import LabelVariationLoss
from ...graphs import similarity
from ..figures import save_figure, series_styles
from ..common import subset
from ..runner import load_spec, load_study_kind
from ..spec import find_spec_file, read_spec_file
from ..tables import Column, write_table
from .tuning import val_splits, tune_fields

__all__ = ["batch_diagnostics", "run_diagnosis"]


def batch_diagnostics(emb: torch.Tensor, y: torch.Tensor, loss: torch.nn.Module, batch: int = 64, knn_k: int = 5) -> dict[str, float]:
    """Loss, same-class reach, class spread and leave-one-out k-NN error of an embedding ``emb`` (N, D) with
    labels ``y`` (N,); the loss and the reach averaged over consecutive batches of ``batch`` rows (as training
    sees them)."""
    losses, reach = [], []
    for i in range(0, len(y) - batch + 1, batch):
        e, t = emb[i:i + batch], y[i:i + batch]
        losses.append(float(loss(e, t)))
        w = similarity(e, loss.kernel, loss.sigma, loss.k)
        same = (t[:, None] == t[None, :]) & ~torch.eye(len(t), dtype=torch.bool)
        reach.append(float((w[same] > 0.01).float().mean()))
    means = torch.stack([emb[y == c].mean(0) for c in torch.unique(y)])
    within = float(torch.stack([(emb[y == c] - means[j]).norm(dim=1).mean() for j, c in enumerate(torch.unique(y))]).mean())
    between = float(torch.pdist(means).mean())
    dist = torch.cdist(emb, emb).fill_diagonal_(float("inf"))
    votes = y[dist.topk(knn_k, dim=1, largest=False).indices]
    loo = float((torch.mode(votes, dim=1).values != y).float().mean())
    return {"loss": float(np.mean(losses)), "reach": float(np.mean(reach)), "spread": within / between, "train_loo_knn": loo}


def run_diagnosis(out_root: str | Path = ".", seed: int = 0, samples: int = 640, log=print) -> list[Path]:
    tune = tune_fields(read_spec_file(find_spec_file("embed")), "quick")
    spec = tune["spec"]
    splits = val_splits(spec)
    # shuffled once (class-balanced prefix, then a fixed permutation): batches of 64 mix the classes as training does
    x_s, y_s = subset(splits.train, samples, 3)
    perm = torch.from_numpy(np.random.default_rng(5).permutation(len(y_s)))
    x_s, y_s = x_s[perm], y_s[perm]
    out_root = Path(out_root)
    runs_dir = out_root / "runs" / "lv2d_diagnosis" / "quick"
    rows: list[dict[str, Any]] = []
    finals: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    start, cpu0 = time.perf_counter(), time.process_time()
    kind = load_study_kind(spec["kind"])
    reference = load_spec("embed", "quick")  # the cross-entropy 2-D reference, trained on the tuning splits
    spec = {**spec, "methods": {**spec["methods"], "ce_2d": reference["methods"]["ce_2d"]}}
    ce = {"id": "cross-entropy 2-D (reference)", "spec_method": spec["methods"]["ce_2d"], "probe": "ce_2d"}
    reference_loss = LabelVariationLoss(normalized=True)  # the paper's objective, scored on the CE bottleneck
    for i, entry in enumerate([*tune["grid"]["lv_2d"], ce]):
        method = entry["spec_method"]
        run_dir = runs_dir / f"{i:02d}_s{seed}"
        cache = run_dir / "diagnosis.pt"
        if cache.exists() and (run_dir / "final.json").exists():
            stored = load_checkpoint(cache)
            if stored["id"] == entry["id"] and stored["method"] == method:
                rows.extend(stored["history"])
                finals[entry["id"]] = (stored["embedding"], y_s)
                continue
        plan = kind.build_run(spec, entry["probe"], seed, splits)
        model, objective, config = plan.objective.model, plan.objective, plan.config
        knn_k = spec["knn_k"]
        lossfn = objective.loss if method["loss"] == "label_variation" else reference_loss
        history: list[dict[str, Any]] = []

        def record(model, splits_, epoch: int = 0, entry=entry, history=history, lossfn=lossfn):
            """The engine's evaluate hook (it passes the 1-based epoch); epoch 0 is the initialization."""
            emb = embed(model, x_s)
            d = batch_diagnostics(emb, y_s, lossfn, knn_k=knn_k)
            knn = KNNClassifier(knn_k).fit(embed(model, splits_.train.tensors[0]), splits_.train.tensors[1])
            d["val_knn"] = knn.error(embed(model, splits_.test.tensors[0]), splits_.test.tensors[1])
            d.update(setting=entry["id"], epoch=epoch)
            history.append(d)
            return {"test_error": d["val_knn"]}

        record(model, splits)  # epoch 0: the initialization
        log(f"[lv2d_diagnosis] {entry['id']}")
        if run_dir.exists():  # the history is recorded while training: retrain from scratch
            shutil.rmtree(run_dir)
        train(objective, splits, config, run_dir, evaluate=record, progress=False,
              record={"loss": method["loss"], "kwargs": method["kwargs"]})
        rows.extend(history)
        finals[entry["id"]] = (embed(objective.model, x_s), y_s)
        atomic_save({"id": entry["id"], "method": method, "history": history, "embedding": finals[entry["id"]][0]}, cache)
    log(f"[lv2d_diagnosis] {time.perf_counter() - start:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU")
    return _write(rows, finals, out_root, spec)


def _write(rows, finals, out_root: Path, spec) -> list[Path]:
    from ...io import atomic_write_text
    from ..tables import csv_text

    res, figs = out_root / "results" / "embed", out_root / "figures" / "embed"
    res.mkdir(parents=True, exist_ok=True)
    keys = ["setting", "epoch", "loss", "reach", "spread", "train_loo_knn", "val_knn"]
    atomic_write_text(res / "lv2d_diagnosis.csv", csv_text(rows, keys))
    last = max(r["epoch"] for r in rows)
    short = [r for r in rows if r["epoch"] in (0, 2, last)]
    cols = [Column("setting", "LV 2-D setting"), Column("epoch", "Epoch"), Column("loss", "Loss (inter-class weight share)", ".3f"),
            Column("reach", "Same-class pairs in reach (%)", ".1f", 100.0), Column("spread", "Class spread / separation", ".2f"),
            Column("train_loo_knn", "Train LOO k-NN error (%)", ".1f", 100.0), Column("val_knn", "Val k-NN error (%)", ".1f", 100.0)]
    write_table(short, cols, res / "lv2d_diagnosis.md", res / "lv2d_diagnosis_short.csv",
                title="Label variation in 2-D: diagnostics over training (embed quick profile, seed 0)",
                notes=("Measured on 640 class-balanced training points in batches of 64 (as in training); reach: "
                       "same-class pairs of a batch with edge weight > 0.01 (only those pull each other together); "
                       "spread: mean distance to the class mean / mean distance between class means; validation: "
                       "300 samples held out of the training set. Full curves: lv2d_diagnosis.csv."),
                csv_keys=keys)
    settings = list(finals)
    styles = series_styles(len(settings))
    fig = _figure(rows, finals, settings, styles)
    return [res / "lv2d_diagnosis.csv", res / "lv2d_diagnosis.md", save_figure(fig, figs / "lv2d_diagnosis.png")]


def _figure(rows, finals, settings, styles):
    from matplotlib.figure import Figure
    import seaborn as sns

    n = len(settings)
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(3.0 * max(n, 5), 6.6), layout="constrained")
        top = fig.subfigures(2, 1, height_ratios=[1, 1])
        keys = ("loss", "reach", "spread", "train_loo_knn", "val_knn")
        axes = top[0].subplots(1, len(keys))
        for ax, key, title, scale in zip(axes, keys,
                                         ("LV loss (inter-class weight share)", "same-class pairs in kernel reach (%)",
                                          "class spread / separation", "train leave-one-out k-NN error (%)",
                                          "validation k-NN error (%)"), (1, 100, 1, 100, 100)):
            for s, (color, marker) in zip(settings, styles):
                h = [r for r in rows if r["setting"] == s]
                ax.plot([r["epoch"] for r in h], [scale * r[key] for r in h], marker=marker, markevery=5, color=color, label=s)
            ax.set_xlabel("epoch")
            ax.set_title(title)
        axes[0].legend(fontsize=7)
        emb_axes = top[1].subplots(1, n)
        classes = sorted({int(c) for s in settings for c in finals[s][1].tolist()})
        class_styles = dict(zip(classes, series_styles(len(classes))))  # the project's color-blind-safe palette
        for ax, s in zip(np.atleast_1d(emb_axes), settings):
            e, y = finals[s]
            for c in classes:
                color, marker = class_styles[c]
                pts = e[y == c]
                ax.scatter(pts[:, 0], pts[:, 1], color=color, marker=marker, s=6, linewidths=0, label=f"class {c}")
            ax.set_title(f"{s}: epoch {max(r['epoch'] for r in rows)}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        handles, labels = np.atleast_1d(emb_axes)[0].get_legend_handles_labels()
        top[1].legend(handles, labels, loc="outside lower center", ncol=len(classes), fontsize=8, markerscale=2.5,
                      frameon=False)
        fig.suptitle("Label variation with a 2-D output (digits, seed 0): diagnostics per epoch, final training "
                     "embeddings (color and marker = class)")
    return fig


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".", help="root of runs/, results/ and figures/")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run_diagnosis(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
