"""Runs of the ``selection`` study: the population design, the training data of one model, and the per-model job
(training with weight snapshots, then every candidate measure at every snapshot, on training data only).

Every job writes into its own run folder ``runs/NAME/PROFILE/<run>/`` (see :func:`geomlat.engine.train`):
``snapshots/epoch_XXXX.pt`` (weights), ``metrics.jsonl`` (test and validation error of every epoch),
``features.pt`` (pooled features of the analysis samples per snapshot, for the stability between seeds) and
``measures.json`` (the record of every snapshot). A finished job (``measures.json`` present) is skipped, an
interrupted one resumes; jobs are independent, so they run in parallel processes.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from ...analysis import ManifoldGraphMetrics, channelwise_loo_errors, geometric_stability, output_margin, parameter_norm, sharpness_proxy
from ...data import balanced_order, load_dataset
from ...engine import evaluate_accuracy, model_outputs, train
from ...objectives import Supervised
from ...io import atomic_save, load_checkpoint, read_json, write_json
from ...graphs import latent_graph
from ...models import build_model, count_parameters
from ...nnk import nnk_interpolation
from ...signals import label_variation
from ..common import blas_threads, layer_features, train_config_from_fields
from ..processes import run_in_processes
from ..runner import StudyContext
from . import figures, report

#: hyperparameter axes of the population and the value an axis takes when the spec does not vary it
AXES = ("width", "depth", "weight_decay", "label_noise", "train_size")
DEFAULTS = {"width": 8, "depth": 3, "weight_decay": 5e-4, "label_noise": 0.0, "train_size": None}
#: the three layers measured in every model, whatever its depth: first stage, last stage (last conv), pooled features
LAYERS = ("first", "last", "pool")
MEASURES_FILE, FEATURES_FILE = "measures.json", "features.pt"


def population(centers: list[dict], axes: dict[str, list], fixed: dict[str, Any], random: int, sample_seed: int) -> list[dict]:
    """The hyperparameter configurations of the population (without seeds), deduplicated, in a fixed order.

    Each center and its one-axis-at-a-time variations (every other value of one axis, the rest as the center):
    so for every center and seed, the models that differ only along axis a form a group of ``len(axes[a])``
    models for the granulated Kendall coefficient. Then ``random`` configurations drawn uniformly from the grid
    of ``axes`` (``numpy`` generator of ``sample_seed``) not already in the population. Axes not in ``axes``
    take ``fixed`` (default :data:`DEFAULTS`).
    """
    base = {**DEFAULTS, **fixed}
    out: list[dict] = []

    def add(config: dict) -> bool:
        if config in out:
            return False
        out.append(config)
        return True

    for center in centers:
        c = {**base, **center}
        add(dict(c))
        for axis, values in axes.items():
            for v in values:
                add({**c, axis: v})
    grid = list(itertools.product(*axes.values()))
    rng = np.random.default_rng(sample_seed)
    for i in rng.permutation(len(grid)):
        if random <= 0:
            break
        random -= add({**base, **dict(zip(axes, grid[i]))})
    return out


def run_name(config: dict, seed: int) -> str:
    n = "all" if config["train_size"] is None else config["train_size"]
    return f"w{config['width']}_d{config['depth']}_wd{config['weight_decay']:g}_ln{config['label_noise']:g}_n{n}_s{seed}"


def model_data(data: dict, config: dict, samples: int):
    """``(splits, analysis_idx)``: the data set with ``val_size`` held out (``splits.val``), a training set of
    ``train_size`` samples and ``label_noise`` of its labels replaced, and the indices into it of the analysis samples.

    Training sets are nested: the first ``train_size`` samples of one class-balanced order of the training pool
    (generator of the data seed), so the ``samples`` analysis samples (the first of that order) are in every
    model's training set. Label noise: ``round(label_noise * n)`` training samples (a random subset drawn from
    the data seed, so the same for every model seed) get a label drawn uniformly among the *other* classes
    (exactly that fraction of wrong labels). The analysis samples keep the labels the model was trained with.
    """
    splits = load_dataset(data["name"], None, seed=data["seed"], **data["options"])
    x, y = splits.train.tensors
    n = len(y) if config["train_size"] is None else config["train_size"]
    if not samples <= n <= len(y):
        raise ValueError(f"train_size={n} must be between analysis.samples={samples} and the {len(y)} training samples "
                         "left after data.options.val_size")
    rng = np.random.default_rng([data["seed"], 15])
    idx = balanced_order(y.numpy(), rng)[:n]
    xt, yt = x[idx], y[idx].clone()
    flip = rng.permutation(n)[: round(config["label_noise"] * n)]
    if len(flip):
        shift = torch.from_numpy(rng.integers(1, splits.num_classes, len(flip)))
        yt[flip] = (yt[flip] + shift) % splits.num_classes
    return dataclasses.replace(splits, train=TensorDataset(xt, yt)), np.arange(samples)


class SnapshotHook:
    """``evaluate=`` hook of :func:`geomlat.engine.train`: test and validation error of every epoch (both recorded in
    ``metrics.jsonl``) and the weights at the ``snapshots`` epochs (``run_dir/snapshots/epoch_XXXX.pt``). The epoch is
    the number of lines already in ``metrics.jsonl`` plus one (``eval_every = 1``)."""

    def __init__(self, run_dir: Path, snapshots: list[int]):
        self.run_dir, self.snapshots = Path(run_dir), set(snapshots)

    def path(self, epoch: int) -> Path:
        return self.run_dir / "snapshots" / f"epoch_{epoch:04d}.pt"

    def __call__(self, model: nn.Module, splits) -> dict[str, float]:
        metrics = self.run_dir / "metrics.jsonl"
        epoch = 1 + (sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.exists() else 0)
        if epoch in self.snapshots:
            atomic_save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, self.path(epoch))
        return {"test_error": 1.0 - evaluate_accuracy(model, splits.test), "val_error": 1.0 - evaluate_accuracy(model, splits.val)}


@torch.no_grad()
def snapshot_measures(model: nn.Module, train_set: TensorDataset, xs: torch.Tensor, ys: torch.Tensor, an: dict) -> tuple[dict, torch.Tensor]:
    """Every candidate measure of one snapshot, from training data only: ``(record, pooled features (N, D))``.

    Whole training set (its possibly noisy labels): ``train_error``, ``train_loss`` (mean cross-entropy), ``margin``
    (10th percentile of the output margins, Jiang et al. 2020). Analysis samples ``xs`` (N, 1, L), ``ys`` (N,):
    ``sharpness`` (:func:`geomlat.analysis.sharpness_proxy`, cross-entropy), ``nnk_loo_<layer>`` and
    ``label_variation_<layer>`` for the first stage, the last stage and the pooled features, ``channel_nnk`` (mean of
    the per-channel NNK LOO errors of the last stage, ``channel_errors`` the (C,) list), ``nnk_neighbors`` and
    ``diameter`` (MGMs of the pooled features' NNK graph, means over nodes); ``param_norm`` (squared L2).
    """
    model.eval()
    logits, y = model_outputs(model, train_set), train_set.tensors[1]
    rec = {"train_error": float((logits.argmax(1) != y).double().mean()), "train_loss": float(F.cross_entropy(logits, y)),
           "margin": float(torch.quantile(output_margin(logits, y).double(), 0.1)), "param_norm": parameter_norm(model),
           "sharpness": sharpness_proxy(model, lambda m: F.cross_entropy(m(xs), ys), an["sharpness_sigma"], an["sharpness_samples"])}
    names = dict(zip(LAYERS, (model.stage_names[0], model.stage_names[-1], model.feature_name)))
    feats = layer_features(model, xs, list(dict.fromkeys(names.values())))
    for layer, module in names.items():
        x = feats[module].flatten(1).double()
        rec[f"nnk_loo_{layer}"] = nnk_interpolation(x, ys, an["nnk_k"], kernel="cosine")[1]
        rec[f"label_variation_{layer}"] = float(label_variation(latent_graph(x, k=an["graph_k"], kernel="cosine"), ys, normalized=True))
    errors = channelwise_loo_errors(feats[names["last"]].double(), ys, an["channel_k"], kernel="cosine")
    rec["channel_nnk"], rec["channel_errors"] = float(errors.mean()), errors.tolist()
    mgm = ManifoldGraphMetrics(k=an["nnk_k"], kernel="cosine").fit(feats["pool"].double())
    rec["nnk_neighbors"], rec["diameter"] = mgm.summary_["n_neighbors_mean"], mgm.summary_["diameter_mean"]
    return rec, feats["pool"].double()


def run_model(spec: dict, config: dict, seed: int, runs_dir: str, progress: bool = False) -> dict:
    """Train one model of the population (resumable) and measure it at every snapshot; returns its record
    ``{"run", "seed", "params", **config, "snapshots": [{"epoch", "test_error", "val_error", measures...}]}``."""
    run_dir = Path(runs_dir) / run_name(config, seed)
    if (run_dir / MEASURES_FILE).exists():
        return read_json(run_dir / MEASURES_FILE)
    an = spec["analysis"]
    splits, idx = model_data(spec["data"], config, an["samples"])
    train_cfg = train_config_from_fields({**spec["train"], "weight_decay": config["weight_decay"]}, "train", seed=seed)
    torch.manual_seed(seed)
    model = build_model(spec["model"], num_classes=splits.num_classes, width=config["width"], depth=config["depth"])
    hook = SnapshotHook(run_dir, an["snapshots"])
    with blas_threads(spec.get("threads")):
        train(Supervised(model), splits, train_cfg, run_dir, evaluate=hook, progress=progress,
              record={"study": spec["name"], "model": spec["model"], "config": config})
        history = {int(r["epoch"]): r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r}
        xs, ys = (t[torch.from_numpy(idx)] for t in splits.train.tensors)
        snaps, pooled = [], {}
        for epoch in an["snapshots"]:
            model.load_state_dict(load_checkpoint(hook.path(epoch)))
            rec, pooled[epoch] = snapshot_measures(model, splits.train, xs, ys, an)
            snaps.append({"epoch": epoch, "test_error": history[epoch]["test_error"], "val_error": history[epoch]["val_error"], **rec})
    atomic_save(pooled, run_dir / FEATURES_FILE)
    record = {"run": run_dir.name, "seed": seed, "params": count_parameters(model), **config, "snapshots": snaps}
    write_json(run_dir / MEASURES_FILE, record)
    return record


def run_stability(runs: list[str], runs_dir: str, nnk_k: int, threads: int | None = None) -> dict[str, dict[int, float]]:
    """Geometric stability of the models of one configuration trained with different seeds (``runs``: their folder
    names): at every snapshot, the Jaccard agreement of the NNK neighborhoods of the pooled features of the same
    analysis samples (:func:`geomlat.analysis.geometric_stability`), for each pair of seeds; a model's value is the mean
    over its pairs. Returns ``{run: {epoch: jaccard}}`` (cached in ``runs_dir/stability/<first run>.json``)."""
    path = Path(runs_dir) / "stability" / f"{runs[0]}.json"
    if path.exists():
        return {r: {int(e): v for e, v in d.items()} for r, d in read_json(path).items()}
    feats = {r: load_checkpoint(Path(runs_dir) / r / FEATURES_FILE) for r in runs}
    out: dict[str, dict[int, list]] = {r: {} for r in runs}
    with blas_threads(threads):
        for a, b in itertools.combinations(runs, 2):
            for epoch in feats[a]:
                j = geometric_stability(feats[a][epoch], feats[b][epoch], k=nnk_k, kernel="cosine")["jaccard"]
                out[a].setdefault(epoch, []).append(j)
                out[b].setdefault(epoch, []).append(j)
    result = {r: {e: float(np.mean(v)) for e, v in d.items()} for r, d in out.items()}
    write_json(path, result)
    return result


def run(spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
    if "interpolation" in spec:  # the interpolating regime (issue 21)
        from .interpolation import run as run_interpolation

        return run_interpolation(spec, ctx)
    pop = spec["population"]
    configs = population(pop["centers"], pop["axes"], pop["fixed"], pop["random"], pop["sample_seed"])
    jobs = [(spec, c, s, str(ctx.runs_dir)) for c in configs for s in spec["seeds"]]
    ctx.log(f"[{ctx.name}] {len(configs)} configurations x {len(spec['seeds'])} seeds = {len(jobs)} models")
    records = {}
    for args, rec in run_in_processes(run_model, jobs, ctx.workers, ctx.threads):
        records[rec["run"]] = rec
        last = rec["snapshots"][-1]
        ctx.log(f"  {rec['run']}: test error {100 * last['test_error']:.1f}% ({len(records)}/{len(jobs)})")
    groups = [[run_name(c, s) for s in spec["seeds"]] for c in configs]
    for _, result in run_in_processes(run_stability, [(g, str(ctx.runs_dir), spec["analysis"]["nnk_k"], ctx.threads) for g in groups],
                                      ctx.workers, ctx.threads):
        for name, by_epoch in result.items():
            for snap in records[name]["snapshots"]:
                snap["stability"] = by_epoch[snap["epoch"]]
    ordered = [records[run_name(c, s)] for c in configs for s in spec["seeds"]]
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    rows = report.statistics(ordered, spec["analysis"]["patience"], spec["analysis"]["n_boot"])
    paths = report.write_tables(ordered, rows, ctx.results_dir, spec)
    paths += figures.write_figures(ordered, rows, ctx.figures_dir)
    return {"rows": rows, "records": ordered, "paths": [str(p) for p in paths]}
