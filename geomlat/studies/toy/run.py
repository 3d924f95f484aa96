"""Running a ``toy`` study: training, label variation of the LGGs over random draws, the table."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..common import blas_threads, layer_features, load_splits, train_config_from_fields, train_model
from ...graphs import latent_graph
from ..runner import StudyContext
from ...signals import label_variation
from ..spec import SpecError
from ..tables import Column, write_table
from .figures import graphs_figure

__all__ = ["run", "draw_class_samples"]


def draw_class_samples(y: np.ndarray, classes: list[int], per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random samples of each class in ``classes``, grouped by class: (len(classes) * per_class,)."""
    out = []
    for c in classes:
        pool = np.flatnonzero(y == c)
        if len(pool) < per_class:
            raise ValueError(f"class {c} has {len(pool)} samples, fewer than per_class={per_class}")
        out.append(rng.choice(pool, per_class, replace=False))
    return np.concatenate(out)


def run(spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
    data, graph = spec["data"], spec["graph"]
    splits = load_splits(data, ctx.data_dir)
    if max(graph["classes"]) >= splits.num_classes:
        raise SpecError("graph.classes", f"{data['name']} has {splits.num_classes} classes, got {graph['classes']}")
    split = splits.train if graph["split"] == "train" else splits.test
    x_all, y_all = split.tensors[0], split.tensors[1]
    layers = [name for _, name in spec["layers"]]
    rows, figure_path, per_seed = [], None, {}
    with blas_threads(spec.get("threads")):
        for seed in spec["seeds"]:
            config = train_config_from_fields(spec["train"], "train", seed=seed)
            run = f"{spec['model']['model']}_s{seed}"
            model, final = train_model(spec["model"], config, splits, ctx, run)
            rng = np.random.default_rng(seed)
            values = np.zeros((graph["draws"], len(layers)))
            for d in range(graph["draws"]):
                idx = torch.from_numpy(draw_class_samples(y_all.numpy(), graph["classes"], graph["per_class"], rng))
                xb, yb = x_all[idx], y_all[idx]
                feats = layer_features(model, xb, layers)
                graphs_ = [latent_graph(feats[n], k=graph["k"], kernel=graph["kernel"]) for n in layers]
                values[d] = [float(label_variation(g, yb, normalized=True)) for g in graphs_]
                if d == 0 and seed == spec["seeds"][0]:
                    figure_path = graphs_figure(spec, ctx, feats, graphs_, yb.numpy(), values[0], final)
            per_seed[seed] = {"values": values, "test_error": final["test_error"]}
            dims = {n: int(np.prod(f.shape[1:])) for n, f in layer_features(model, x_all[:2], layers).items()}
            for j, (title, name) in enumerate(spec["layers"]):
                row = {"seed": seed, "layer": title, "module": name, "dim": dims[name], "figure": float(values[0, j]),
                       "mean": float(values[:, j].mean()), "std": float(values[:, j].std(ddof=1)) if graph["draws"] > 1 else float("nan"),
                       "test_error": final["test_error"]}
                if j > 0:
                    row["below_previous"] = float((values[:, j] < values[:, j - 1]).mean())
                rows.append(row)
    paths = write_tables(spec, ctx, rows)
    return {"rows": rows, "paths": [str(p) for p in paths] + [str(figure_path)]}


def write_tables(spec, ctx, rows):
    graph = spec["graph"]
    cols = [Column("seed", "seed"), Column("layer", "layer"), Column("dim", "dim"),
            Column("figure", "label variation (figure)", ".3f"), Column("mean", f"mean over {graph['draws']} draws", ".3f"),
            Column("std", "sd", ".3f"), Column("below_previous", "draws below previous layer", ".0%")]
    notes = (
        f"Normalized label variation (share of edge weight joining two classes; 0 = classes never touch) of the "
        f"k = {graph['k']} LGG of {len(graph['classes']) * graph['per_class']} {graph['split']} samples "
        f"({graph['per_class']} of each class {graph['classes']}). 'figure' is the draw shown in "
        f"figures/{ctx.name}/toy_graphs.png; mean and sd over {graph['draws']} independent draws; the last column is "
        "the share of draws in which the layer's value is below the previous layer's. With k = 5 and 5 samples per "
        "class every vertex has at least one neighbor of another class, so 0 cannot be reached."
    )
    md, csv = ctx.results_dir / "label_variation.md", ctx.results_dir / "label_variation.csv"
    write_table(rows, cols, md, csv, title=f"{spec['name']}: label variation per layer ({spec['profile']} profile)", notes=notes,
                csv_keys=["seed", "layer", "module", "dim", "figure", "mean", "std", "below_previous", "test_error"])
    return [md, csv]
