"""Study kind ``toy``: the LGG paper's Figure 2 (Section 3.3.1, Appendix C).

A network is trained on the data set; 20 training samples (5 per class of 4 classes) are drawn; the
LGGs (``k = 5``) of the input, a middle layer and the penultimate layer are drawn with a Laplacian-eigenmap
layout (PyGSP ``set_coordinates("laplacian_eigenmap2D")``), vertices coloured by class and only the
inter-class edges drawn (the ones the label variation counts); each panel's title gives the normalized
label variation (Appendix C: 0 = no edge between classes, 1 = every edge joins two classes).

A single draw of 20 samples is noisy, so the table also reports the label variation over ``draws``
independent draws (mean and standard deviation) and how often it decreases from each layer to the next.

Spec fields (see ``studies/toy.toml``):

- ``data``: ``name``, ``seed`` (split, default 0), ``options`` (passed to ``load_dataset``).
- ``model``: ``model`` (a ``geomlat.models`` name), ``kwargs``; ``train``: :class:`~geomlat.engine.TrainConfig`
  fields (not ``seed``: one model per entry of ``seeds``; the figure shows the first seed).
- ``graph``: ``k`` (5), ``kernel`` ("auto": cosine for non-negative data, RBF otherwise), ``classes``
  (class indices shown, default [0, 1, 2, 3]), ``per_class`` (5), ``split`` ("train" as in the paper, or
  "test"), ``draws`` (random draws for the table, default 50; the figure shows draw 0).
- ``layers``: ``[[title, module], ...]``, module ``"input"`` for the raw inputs; default input, the
  middle stage and the pooled penultimate features of the model.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import load_dataset
from ..engine import Supervised, TrainConfig, train
from ..engine.train import load_trained_model
from ..graphs import latent_graph, resolve_kernel
from ..interop import to_scipy
from ..models import MODELS, build_model, count_parameters
from ..signals import label_variation
from .common import INPUT, blas_threads, data_fields, layer_features, train_config_from_fields
from .figures import PALETTE, new_figure, save_figure, series_styles
from .runner import StudyContext, StudyKind, register_study_kind
from .spec import Fields, SpecError
from .tables import Column, write_table

__all__ = ["ToyStudy", "eigenmap_layout", "draw_class_samples", "INPUT", "data_fields", "model_fields",
           "check_layer", "train_model", "layer_features", "blas_threads"]



# ------------------------------------------------------------------------ shared spec/run helpers
def model_fields(fields: Fields, key: str = "model") -> tuple[dict[str, Any], nn.Module]:
    """``{model, kwargs}`` table, validated by building the model: returns ``(entry, model)``."""
    f = fields.fields(key)
    entry = {"model": f.str("model"), "kwargs": f.table_("kwargs", {})}
    f.finish()
    if entry["model"] not in MODELS:
        raise SpecError(f.sub("model"), f"unknown model {entry['model']!r}; registered models: {sorted(MODELS)}")
    try:
        model = build_model(entry["model"], **entry["kwargs"])
    except (TypeError, ValueError) as err:
        raise SpecError(f.sub("kwargs"), str(err)) from err
    return entry, model


def check_layer(name: str, model: nn.Module, path: str, allow_input: bool = True) -> None:
    """SpecError unless ``name`` is a module of ``model`` (or ``"input"``)."""
    if allow_input and name == INPUT:
        return
    if name not in dict(model.named_modules()) or name == "":
        raise SpecError(path, f"layer {name!r} is not a module of {type(model).__name__}; stage names: "
                              f"{getattr(model, 'stage_names', [])}, features: {getattr(model, 'feature_name', None)!r}"
                              + (f", or {INPUT!r} for the raw inputs" if allow_input else ""))


def train_model(entry: dict[str, Any], config: TrainConfig, splits, ctx: StudyContext, run: str, **train_kwargs) -> tuple[nn.Module, dict]:
    """Build ``entry``'s model under ``torch.manual_seed(config.seed)``, train it with cross-entropy in
    ``ctx.runs_dir / run`` (skipped when finished, resumed when interrupted); returns ``(model in eval
    mode, final metrics)``."""
    torch.manual_seed(config.seed)
    model = build_model(entry["model"], **{"num_classes": splits.num_classes, **entry["kwargs"]})
    record = {"study": ctx.name, "profile": ctx.profile, "model": entry["model"], "kwargs": entry["kwargs"]}
    final = train(Supervised(model), splits, config, ctx.runs_dir / run, progress=ctx.progress, record=record, **train_kwargs)
    load_trained_model(ctx.runs_dir / run, model)  # the final weights (also when the run was skipped)
    ctx.log(f"  {run}: {count_parameters(model):,} parameters, test error {100 * final['test_error']:.2f}%")
    return model.eval(), final


# ------------------------------------------------------------------------ toy-specific pieces
def draw_class_samples(y: np.ndarray, classes: list[int], per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random samples of each class in ``classes``, grouped by class: (len(classes) * per_class,)."""
    out = []
    for c in classes:
        pool = np.flatnonzero(y == c)
        if len(pool) < per_class:
            raise ValueError(f"class {c} has {len(pool)} samples, fewer than per_class={per_class}")
        out.append(rng.choice(pool, per_class, replace=False))
    return np.concatenate(out)


def eigenmap_layout(g) -> np.ndarray:
    """(B, 2) Laplacian-eigenmap coordinates of an LGG (Belkin & Niyogi 2003) with PyGSP.

    ``pygsp.graphs.Graph.set_coordinates("laplacian_eigenmap2D")`` takes the eigenvectors of the 2nd and
    3rd smallest eigenvalues of ``L = D - A``. A disconnected graph has several zero eigenvalues whose
    eigenvectors are constant on each component (all of a component's vertices would land on one
    point), so a complete graph of weight ``1e-3 x`` the mean edge weight is added first in that case.
    Each coordinate's sign is fixed so that its largest-magnitude entry is positive (deterministic plots).
    """
    import scipy.sparse as sp
    from pygsp import graphs
    from scipy.sparse.csgraph import connected_components

    W = to_scipy(g)
    n = W.shape[0]
    if n < 3:
        raise ValueError(f"a 2-D eigenmap needs at least 3 vertices, got {n}")
    if connected_components(W, directed=False)[0] > 1:
        eps = 1e-3 * (W.data.mean() if W.nnz else 1.0)
        W = (W + sp.csr_matrix(eps * (np.ones((n, n)) - np.eye(n)))).tocsr()
    G = graphs.Graph(W)
    G.set_coordinates("laplacian_eigenmap2D")
    coords = np.asarray(G.coords, dtype=float).copy()
    pivot = np.abs(coords).argmax(axis=0)
    coords *= np.sign(coords[pivot, np.arange(2)])
    return coords


def _draw_panel(ax, coords: np.ndarray, g, y: np.ndarray, classes: list[int], styles) -> int:
    """Inter-class edges and vertices on ``ax``, one ``(colour, marker)`` of ``styles`` per class; returns the
    number of inter-class edges."""
    src, dst = g.edge_index.numpy()
    keep = (src < dst) & (y[src] != y[dst])
    for s, d in zip(src[keep], dst[keep]):
        ax.plot(coords[[s, d], 0], coords[[s, d], 1], color="0.4", lw=1.0, alpha=0.8, zorder=1)
    for i, c in enumerate(classes):
        sel = y == c
        ax.scatter(coords[sel, 0], coords[sel, 1], s=60, color=styles[i][0], marker=styles[i][1], edgecolor="black", linewidth=0.6,
                   alpha=0.9, zorder=2, label=f"class {c}")
    ax.set_xticks([])
    ax.set_yticks([])
    return int(keep.sum())


@register_study_kind("toy")
class ToyStudy(StudyKind):
    """The paper's Figure 2 on any model and data set (module docstring)."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        data = data_fields(fields)
        model_entry, model = model_fields(fields)
        train_table = fields.table_("train", {})
        train_config_from_fields(train_table, "train")
        gf = fields.fields("graph", {})
        graph = {"k": gf.int("k", 5, minimum=1), "kernel": gf.str("kernel", "auto", choices=("auto", "cosine", "rbf", "cosine_shifted")),
                 "classes": gf.list("classes", [0, 1, 2, 3], item=int, nonempty=True),
                 "per_class": gf.int("per_class", 5, minimum=1), "split": gf.str("split", "train", choices=("train", "test")),
                 "draws": gf.int("draws", 50, minimum=1)}
        gf.finish()
        classes = graph["classes"]
        if len(set(classes)) != len(classes):
            raise SpecError("graph.classes", f"duplicate classes in {classes}")
        if any(c < 0 for c in classes):
            raise SpecError("graph.classes", f"classes must be >= 0, got {classes}")
        if len(classes) < 2:
            raise SpecError("graph.classes", "label variation needs at least 2 classes")
        n = len(classes) * graph["per_class"]
        if n < 3:
            raise SpecError("graph.per_class", f"{n} samples in all: the 2-D eigenmap needs at least 3")
        if graph["k"] >= n:
            raise SpecError("graph.k", f"k={graph['k']} must be smaller than the number of samples ({n})")
        middle = model.stage_names[(len(model.stage_names) - 1) // 2] if getattr(model, "stage_names", None) else None
        default_layers = [["input", INPUT]] + ([[f"middle ({middle})", middle]] if middle else []) + \
                         ([[f"penultimate ({model.feature_name})", model.feature_name]] if getattr(model, "feature_name", None) else [])
        layers = fields.list("layers", default_layers)
        out_layers = []
        for i, item in enumerate(layers):
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
                raise SpecError(f"layers[{i}]", f"expected [title, module name], got {item!r}")
            check_layer(item[1], model, f"layers[{i}][1]")
            out_layers.append(item)
        if not out_layers:
            raise SpecError("layers", "must not be empty")
        return {"data": data, "model": model_entry, "train": train_table, "graph": graph, "layers": out_layers}

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        data, graph = spec["data"], spec["graph"]
        try:
            splits = load_dataset(data["name"], ctx.data_dir, seed=data["seed"], **data["options"])
        except TypeError as err:
            raise SpecError("data.options", str(err)) from err
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
                        figure_path = self._figure(spec, ctx, feats, graphs_, yb.numpy(), values[0], final)
                per_seed[seed] = {"values": values, "test_error": final["test_error"]}
                dims = {n: int(np.prod(f.shape[1:])) for n, f in layer_features(model, x_all[:2], layers).items()}
                for j, (title, name) in enumerate(spec["layers"]):
                    row = {"seed": seed, "layer": title, "module": name, "dim": dims[name], "figure": float(values[0, j]),
                           "mean": float(values[:, j].mean()), "std": float(values[:, j].std(ddof=1)) if graph["draws"] > 1 else float("nan"),
                           "test_error": final["test_error"]}
                    if j > 0:
                        row["below_previous"] = float((values[:, j] < values[:, j - 1]).mean())
                    rows.append(row)
        paths = self._table(spec, ctx, rows)
        return {"rows": rows, "paths": [str(p) for p in paths] + [str(figure_path)]}

    # ------------------------------------------------------------------ outputs
    @staticmethod
    def _figure(spec, ctx, feats, graphs_, y, values, final):
        graph = spec["graph"]
        styles = series_styles(len(graph["classes"]))
        fig, axes = new_figure(ncols=len(graphs_), width=4.0, height=4.3)
        axes = np.atleast_1d(axes)
        for ax, (title, name), g, v in zip(axes, spec["layers"], graphs_, values):
            coords = eigenmap_layout(g)
            dim = int(np.prod(feats[name].shape[1:]))
            n_edges = _draw_panel(ax, coords, g, y, graph["classes"], styles)
            ax.set_title(f"{title}, {dim}-d\nnormalized label variation {v:.3f}\n{n_edges} inter-class edges "
                         f"of {g.edge_index.shape[1] // 2}", fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9, frameon=False)
        kernels = sorted({resolve_kernel(feats[name], graph["kernel"]) for _, name in spec["layers"]})
        fig.suptitle(
            f"LGGs of {len(y)} {graph['split']} samples of {spec['data']['name']} ({graph['per_class']} per class), "
            f"{spec['model']['model']} (test error {100 * final['test_error']:.1f}%)\n{'/'.join(kernels)} k-NN graphs, k = {graph['k']}, "
            "Laplacian-eigenmap layout; only inter-class edges drawn",
            fontsize=10,
        )
        return save_figure(fig, ctx.figures_dir / "toy_graphs.png")

    @staticmethod
    def _table(spec, ctx, rows):
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
            "class every vertex has at least one neighbour of another class, so 0 cannot be reached."
        )
        md, csv = ctx.results_dir / "label_variation.md", ctx.results_dir / "label_variation.csv"
        write_table(rows, cols, md, csv, title=f"{spec['name']}: label variation per layer ({spec['profile']} profile)", notes=notes,
                    csv_keys=["seed", "layer", "module", "dim", "figure", "mean", "std", "below_previous", "test_error"])
        return [md, csv]
