"""Benchmark 1: the Laplacian-networks robustness regularizer on every ReLU output (LGG paper 4.3).

A training step of a network with ``SmoothnessRegularizer`` on every ReLU output, over the plain
cross-entropy step, at several batch sizes; full-batch graphs (the authors' setting) and k-NN graphs
(k = 10). The authors' approach (dense Laplacian, ``matrix_power``, per-row k-NN loop; see
:mod:`benchmarks.reference`) is timed in the same run. The regularizer alone (forward + backward given
the captured activations) is timed as well, since on a CPU the convolutions dominate a step.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from geomlat import LatentCapture
from geomlat.losses import SmoothnessRegularizer
from geomlat.models import build_model

from .common import Result, interleaved
from .reference import authors_regularizer

K = 10


def _step(model, opt, x, y, reg):
    opt.zero_grad(set_to_none=True)
    if reg is None:
        loss = F.cross_entropy(model(x), y)
    else:
        names = model.relu_names
        with LatentCapture(model, names) as out:
            logits = model(x)
        loss = F.cross_entropy(logits, y) + reg([out[n] for n in names], y)
    loss.backward()
    opt.step()


def _alone(feats, y, reg):
    for f in feats:
        f.grad = None
    reg(feats, y).backward()


def regularizers(authors: bool = True) -> dict:
    regs = {"ours_full": SmoothnessRegularizer(), f"ours_knn": SmoothnessRegularizer(k=K)}
    if authors:
        regs["authors_full"] = authors_regularizer
        regs["authors_knn"] = partial(authors_regularizer, k=K)
    return regs


def bench_model(label: str, model_name: str, shape: tuple, batches: dict, model_kwargs: dict | None = None) -> list[Result]:
    """``batches``: {B: {"reps": int, "warmup": int, "authors_in_step": bool, "alone_reps": int}}."""
    gen = torch.Generator().manual_seed(0)
    model = build_model(model_name, **(model_kwargs or {}))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    results = []
    for b, cfg in batches.items():
        x = torch.rand(b, *shape, generator=gen)
        y = torch.randint(0, 10, (b,), generator=gen)
        regs = regularizers(authors=cfg.get("authors_in_step", True))
        sides = {"plain": partial(_step, model, opt, x, y, None)}
        sides.update({name: partial(_step, model, opt, x, y, reg) for name, reg in regs.items()})
        t = interleaved(sides, cfg["reps"], cfg.get("warmup", 1))
        size = f"{label}, batch {b}, input {shape}, {len(model.relu_names)} ReLU outputs, m = 2, k = {K} for k-NN"
        for name in regs:
            graph = "full" if name.endswith("full") else "knn"
            who = "" if name.startswith("ours") else "authors_"
            goal = ("<= 1.05" if graph == "full" else "<= 1.15") if not who else "info"
            results.append(Result(
                f"regularizer_overhead_{who}{graph}_{label}_b{b}", t.ratio(name, "plain"), goal, "x plain step",
                f"{size}; step medians: {t.describe()} ({cfg['reps']} reps)"))
        # the regularizer alone, given captured activations (leaves), ours vs the authors' approach
        with torch.no_grad(), LatentCapture(model, model.relu_names, detach=True) as out:
            model(x)
        feats = [out[n].clone().requires_grad_(True) for n in model.relu_names]
        regs = regularizers(authors=True)
        t = interleaved({name: partial(_alone, feats, y, reg) for name, reg in regs.items()}, cfg.get("alone_reps", cfg["reps"]), 1)
        for graph in ("full", "knn"):
            results.append(Result(
                f"regularizer_alone_speedup_{graph}_{label}_b{b}", t.ratio(f"authors_{graph}", f"ours_{graph}"), "info",
                "x (authors / ours)", f"{size}; regularizer forward+backward alone: {t.describe()}"))
        del feats, out
    return results


def run(cfg: dict) -> list[Result]:
    results = bench_model("preact_resnet18", "preact_resnet18", (3, 32, 32), cfg["preact_batches"])
    results += bench_model("quick_small_cnn", "small_cnn", (1, 8, 8), cfg["quick_batches"])
    steps = [r for r in results if r.name.startswith("regularizer_overhead_full_")]
    worst = max(steps, key=lambda r: r.value)
    headline = Result("regularizer_overhead", worst.value, "<= 1.05", "x plain step",
                      f"worst ratio over models and batch sizes, full-batch graphs ({worst.name})")
    return [headline] + results
