"""Study kind ``manifold``: the geometry of a network's layers over training (``papers/004``, LGG paper 3.3).

One network (model A) is trained; a weight snapshot is saved after every epoch. For each analysed epoch
and each layer, on ``analysis.samples`` class-balanced samples of the *training* split (no validation
data is used, which is the point: Shekkizhar & Ortega, Asilomar 2021; Bonet et al., APSIPA 2021):

- manifold graph metrics of the NNK graph (:class:`geomlat.analysis.ManifoldGraphMetrics`): NNK
  neighbours per node, polytope diameter, local dimension (means over nodes);
- the label-signal spectrum on the cosine k-NN LGG (as :func:`geomlat.analysis.label_spectrum`, Laplacian
  ``D - A``, whose null space holds the indicators of the connected components): energy of the one-hot labels per graph frequency, its share in the ``C`` lowest
  frequencies (``C`` = number of classes; 1 when the connected components of the LGG are exactly the
  classes) and the normalized label variation;
- the leave-one-out NNK interpolation error (:func:`geomlat.nnk.nnk_interpolation`) and, as a plain
  baseline, the leave-one-out k-NN error on the LGG (:func:`geomlat.analysis.knn_decisions`);
- beside them the model's own error on the same training samples and its test error.

Model selection / early stopping: across epochs, the Spearman rank correlation of each signal with the
test error, and the test error at the first epoch where the signal is smallest (what early stopping on
that signal would keep). A second network of another width (model B) is trained with the same recipe,
and the two are compared layer by layer on test samples with LGG similarity, linear CKA and mutual
k-NN overlap (:func:`geomlat.analysis.compare_models`).

Per-epoch snapshots: :func:`geomlat.engine.train` has no epoch-end hook, so the snapshot is written from
its ``evaluate=`` hook, which ``train`` calls after every epoch when ``eval_every = 1`` (required here).
The hook computes the usual test error and saves the weights to ``RUN/snapshots/epoch_XXXX.pt``; the
epoch number is the number of lines already in ``RUN/metrics.jsonl`` plus one (``train`` writes that
file after each epoch, also when it resumes). Training itself (lr schedule, random streams) is unchanged.

Spec fields (see ``studies/manifold.toml``): ``data``, ``model`` / ``train`` (as in ``toy``; exactly one
seed), ``layers`` (module names, ``"input"`` for the raw inputs; default input, every stage and the pooled
features), ``analysis``: ``samples`` (500), ``nnk_k`` (15), ``graph_k`` (10), ``kernel`` ("cosine"),
``every`` (analyse every this many epochs; the last epoch always), ``spectrum_epochs`` (epochs whose
spectra are drawn; default first and last), ``comparison``: ``model`` (another width), ``samples``
(test samples, 500), ``knn_k`` (mutual k-NN overlap, 10), ``lgg_k`` (the LGG similarity is computed on full
graphs, as in the GKD code, and on ``lgg_k``-NN graphs; 10), ``layers_a`` / ``layers_b`` (default: the stages
and the pooled features of each model).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis import ManifoldGraphMetrics, compare_models, fourier_basis, knn_decisions, plot_similarity_heatmaps
from ..data import balanced_order, load_dataset
from ..engine import evaluate_accuracy, predict
from ..engine.io import atomic_save, atomic_write_text, load_checkpoint
from ..graphs import latent_graph
from ..models import count_parameters
from ..kernels import kernel_names
from ..nnk import nnk_interpolation
from ..signals import label_variation
from .distill import train_config_from_fields
from .figures import PALETTE, new_figure, save_figure, series_styles
from .runner import StudyContext, StudyKind, register_study_kind
from .spec import Fields, SpecError
from .tables import Column, csv_text, write_table
from .toy import INPUT, blas_threads, check_layer, data_fields, layer_features, model_fields, train_model

__all__ = ["ManifoldStudy", "SnapshotHook", "layer_geometry", "selection_stats"]

SNAPSHOTS = "snapshots"


class SnapshotHook:
    """``evaluate=`` hook of :func:`geomlat.engine.train` saving the weights after every epoch.

    ``hook(model, splits) -> {"test_error": float}`` (the engine's default metric) and writes
    ``model.state_dict()`` to ``run_dir/snapshots/epoch_XXXX.pt`` (atomic), XXXX = number of lines in
    ``run_dir/metrics.jsonl`` + 1 (the epoch being evaluated; see the module docstring).
    """

    def __init__(self, run_dir: str | Path, batch_size: int = 512):
        self.run_dir, self.batch_size = Path(run_dir), batch_size

    def epoch(self) -> int:
        metrics = self.run_dir / "metrics.jsonl"
        done = sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.exists() else 0
        return done + 1

    def path(self, epoch: int) -> Path:
        return self.run_dir / SNAPSHOTS / f"epoch_{epoch:04d}.pt"

    def __call__(self, model: nn.Module, splits) -> dict[str, float]:
        error = 1.0 - evaluate_accuracy(model, splits.test, self.batch_size)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        atomic_save(state, self.path(self.epoch()))
        return {"test_error": error}


@torch.no_grad()
def layer_geometry(x: torch.Tensor, y: torch.Tensor, num_classes: int, nnk_k: int = 15, graph_k: int = 10,
                   kernel: str = "cosine") -> dict[str, Any]:
    """Geometry of one layer's features ``x`` (N, ...) with labels ``y`` (N,).

    Returns ``{"nnk_loo_error", "knn_loo_error", "nnk_neighbors", "diameter", "local_dim",
    "label_variation" (normalized, on the k-NN LGG), "low_freq_share" (label energy in the
    ``num_classes`` lowest frequencies of ``L = D - A`` / N), "spectrum" (N,) energy per frequency
    (ascending eigenvalues), "eigenvalues" (N,)}``.
    """
    x = x.detach().flatten(1).double()
    mgm = ManifoldGraphMetrics(k=nnk_k, kernel=kernel).fit(x)
    _, nnk_error = nnk_interpolation(x, y, nnk_k, result=mgm.nnk_)  # one NNK solve for both (same options)
    lgg_kernel = "cosine" if kernel == "cosine_shifted" else kernel
    knn_error = float((knn_decisions(x, y, graph_k, kernel=lgg_kernel) != y).double().mean())
    g = latent_graph(x, k=graph_k, kernel=lgg_kernel)
    eigenvalues, U = fourier_basis(g)  # PyGSP, L = D - A
    # label energy per frequency, as label_spectrum() (one eigendecomposition instead of two)
    energy = ((U.T @ torch.nn.functional.one_hot(y.cpu(), num_classes).double()) ** 2).sum(dim=1)
    return {
        "nnk_loo_error": nnk_error,
        "knn_loo_error": knn_error,
        "nnk_neighbors": mgm.summary_["n_neighbors_mean"],
        "diameter": mgm.summary_["diameter_mean"],
        "local_dim": mgm.summary_["local_dim_mean"],
        "label_variation": float(label_variation(g, y, normalized=True)),
        "low_freq_share": float(energy[:num_classes].sum() / energy.sum()),
        "spectrum": energy.numpy(),
        "eigenvalues": eigenvalues.numpy(),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Spearman rho and p-value; NaN when either series is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def selection_stats(signal: np.ndarray, test_error: np.ndarray, epochs: np.ndarray) -> dict[str, float]:
    """How well a per-epoch ``signal`` (lower = better) selects an epoch for low ``test_error``.

    Returns ``{"spearman", "p_value", "chosen_epoch" (first epoch where the signal is smallest: early
    stopping), "test_error_at_chosen", "regret" (test error at the chosen epoch minus the best test error
    over the analysed epochs)}``.
    """
    signal, test_error = np.asarray(signal, float), np.asarray(test_error, float)
    rho, p = _spearman(signal, test_error)
    i = int(np.argmin(signal))  # first minimum
    return {"spearman": rho, "p_value": p, "chosen_epoch": int(epochs[i]), "test_error_at_chosen": float(test_error[i]),
            "regret": float(test_error[i] - test_error.min())}


def _layers_field(fields: Fields, key: str, model: nn.Module, default: list[str], allow_input: bool) -> list[str]:
    names = fields.list(key, default, item=str, nonempty=True)
    for i, n in enumerate(names):
        check_layer(n, model, f"{fields.sub(key)}[{i}]", allow_input=allow_input)
    if len(set(names)) != len(names):
        raise SpecError(fields.sub(key), f"duplicate layers in {names}")
    return names


@register_study_kind("manifold")
class ManifoldStudy(StudyKind):
    """Per-layer, per-epoch manifold geometry and NNK model selection (module docstring)."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        if len(spec["seeds"]) != 1:
            raise SpecError("seeds", f"the manifold study follows one training run: give exactly one seed, got {spec['seeds']}")
        data = data_fields(fields)
        model_entry, model = model_fields(fields)
        train_table = fields.table_("train", {})
        config = train_config_from_fields(train_table, "train")
        if config.eval_every != 1:
            raise SpecError("train.eval_every", "must be 1: the per-epoch snapshots are taken at each evaluation")
        stages = list(getattr(model, "stage_names", []))
        feature = [model.feature_name] if getattr(model, "feature_name", None) else []
        layers = _layers_field(fields, "layers", model, [INPUT, *stages, *feature], allow_input=True)

        af = fields.fields("analysis", {})
        analysis = {"samples": af.int("samples", 500, minimum=10), "nnk_k": af.int("nnk_k", 15, minimum=1),
                    "graph_k": af.int("graph_k", 10, minimum=1), "kernel": af.str("kernel", "cosine", choices=kernel_names()),
                    "every": af.int("every", 1, minimum=1)}
        analysis["spectrum_epochs"] = af.list("spectrum_epochs", [1, config.epochs], item=int, nonempty=True)
        af.finish()
        for key in ("nnk_k", "graph_k"):
            if analysis[key] >= analysis["samples"]:
                raise SpecError(f"analysis.{key}", f"must be smaller than analysis.samples={analysis['samples']}")
        for i, e in enumerate(analysis["spectrum_epochs"]):
            if not 1 <= e <= config.epochs:
                raise SpecError(f"analysis.spectrum_epochs[{i}]", f"epoch {e} is outside 1..{config.epochs}")

        cf = fields.fields("comparison")
        cmp_entry, cmp_model = model_fields(cf, "model")
        c_stages = list(getattr(cmp_model, "stage_names", []))
        c_feature = [cmp_model.feature_name] if getattr(cmp_model, "feature_name", None) else []
        comparison = {"model": cmp_entry, "samples": cf.int("samples", 500, minimum=4), "knn_k": cf.int("knn_k", 10, minimum=1),
                      "lgg_k": cf.int("lgg_k", 10, minimum=1),
                      "layers_a": _layers_field(cf, "layers_a", model, [*stages, *feature], allow_input=False),
                      "layers_b": _layers_field(cf, "layers_b", cmp_model, [*c_stages, *c_feature], allow_input=False)}
        cf.finish()
        for key in ("knn_k", "lgg_k"):
            if comparison[key] is not None and comparison[key] >= comparison["samples"]:
                raise SpecError(f"comparison.{key}", f"must be smaller than comparison.samples={comparison['samples']}")
        return {"data": data, "model": model_entry, "train": train_table, "layers": layers, "analysis": analysis,
                "comparison": comparison}

    # ------------------------------------------------------------------ running
    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        data, an, cmp_ = spec["data"], spec["analysis"], spec["comparison"]
        try:
            splits = load_dataset(data["name"], ctx.data_dir, seed=data["seed"], **data["options"])
        except TypeError as err:
            raise SpecError("data.options", str(err)) from err
        seed = spec["seeds"][0]
        config = train_config_from_fields(spec["train"], "train", seed=seed)
        with blas_threads(spec.get("threads")):
            # ---- model A with per-epoch snapshots
            run_a = f"{spec['model']['model']}_{_width_tag(spec['model'])}_s{seed}"
            hook = SnapshotHook(ctx.runs_dir / run_a, config.eval_batch_size)
            model_a, final_a = train_model(spec["model"], config, splits, ctx, run_a, evaluate=hook)
            missing = [e for e in range(1, config.epochs + 1) if not hook.path(e).exists()]
            if missing:
                raise FileNotFoundError(f"{ctx.runs_dir / run_a} lacks the snapshots of epochs {missing[:5]}...: it was trained "
                                        "without the snapshot hook; delete the folder and run the study again")
            test_errors = _test_errors(ctx.runs_dir / run_a)

            # ---- per-epoch geometry on class-balanced training samples
            x_tr, y_tr = splits.train.tensors
            order = balanced_order(y_tr.numpy(), np.random.default_rng(seed))[: an["samples"]]
            idx = torch.from_numpy(np.sort(order))
            xs, ys = x_tr[idx], y_tr[idx]
            epochs = sorted(set(range(an["every"], config.epochs + 1, an["every"])) | {config.epochs} | set(an["spectrum_epochs"]))
            ctx.log(f"[{ctx.name}] geometry of {len(spec['layers'])} layers x {len(epochs)} epochs on {len(idx)} training samples")
            rows, spectra = [], {}
            input_geo = None
            for epoch in epochs:
                model_a.load_state_dict(load_checkpoint(hook.path(epoch)))
                model_a.eval()
                train_error = float((predict(model_a, torch.utils.data.TensorDataset(xs, ys)) != ys).double().mean())
                feats = layer_features(model_a, xs, spec["layers"])
                for name in spec["layers"]:
                    if name == INPUT and input_geo is not None:
                        geo = input_geo  # the inputs do not change with training
                    else:
                        geo = layer_geometry(feats[name], ys, splits.num_classes, an["nnk_k"], an["graph_k"], an["kernel"])
                        if name == INPUT:
                            input_geo = geo
                    if epoch in an["spectrum_epochs"]:
                        spectra[(epoch, name)] = (geo["eigenvalues"], geo["spectrum"])
                    rows.append({"epoch": epoch, "layer": name, "test_error": test_errors[epoch], "train_error": train_error,
                                 **{k: v for k, v in geo.items() if k not in ("spectrum", "eigenvalues")}})
            model_a.load_state_dict(load_checkpoint(hook.path(config.epochs)))
            model_a.eval()

            # ---- model B (other width), comparison on test samples
            run_b = f"{cmp_['model']['model']}_{_width_tag(cmp_['model'])}_s{seed}"
            model_b, final_b = train_model(cmp_["model"], config, splits, ctx, run_b)
            x_te, y_te = splits.test.tensors
            t_idx = torch.from_numpy(np.sort(balanced_order(y_te.numpy(), np.random.default_rng(seed))[: cmp_["samples"]]))
            x_cmp = x_te[t_idx]
            full = compare_models(model_a, model_b, x_cmp, cmp_["layers_a"], cmp_["layers_b"], k=cmp_["knn_k"])
            local = compare_models(model_a, model_b, x_cmp, cmp_["layers_a"], cmp_["layers_b"], methods=("lgg",),
                                   graph_k=cmp_["lgg_k"])
            comparison = {"lgg": full["lgg"], "lgg_knn": local["lgg"], "cka": full["cka"], "knn_overlap": full["knn_overlap"]}
            # final-epoch NNK LOO of both widths (model selection across widths, training data only)
            width_rows = []
            for tag, entry, model, final in (("A", spec["model"], model_a, final_a), ("B", cmp_["model"], model_b, final_b)):
                feats = layer_features(model, xs, [model.feature_name])
                _, loo = nnk_interpolation(feats[model.feature_name].flatten(1).double(), ys, an["nnk_k"], kernel=an["kernel"])
                width_rows.append({"model": tag, "name": f"{entry['model']} {_width_tag(entry)}", "params": count_parameters(model),
                                   "test_error": final["test_error"], "nnk_loo_pool": loo})

        ctx.results_dir.mkdir(parents=True, exist_ok=True)
        selection = self._selection(rows, spec)
        paths = self._tables(spec, ctx, rows, selection, comparison, width_rows)
        paths += self._figures(spec, ctx, rows, spectra, selection, comparison, splits.num_classes, width_rows)
        return {"rows": rows, "selection": selection, "paths": [str(p) for p in paths]}

    # ------------------------------------------------------------------ analysis of the per-epoch rows
    @staticmethod
    def _selection(rows: list[dict], spec: dict) -> list[dict]:
        by_layer = {name: [r for r in rows if r["layer"] == name] for name in spec["layers"]}
        first = by_layer[spec["layers"][0]]
        epochs = np.array([r["epoch"] for r in first])
        test = np.array([r["test_error"] for r in first])
        out = [{"signal": "test error (oracle)", "layer": "", **selection_stats(test, test, epochs)},
               {"signal": "train error (same samples)", "layer": "", **selection_stats(np.array([r["train_error"] for r in first]), test, epochs)}]
        for key, label in (("nnk_loo_error", "NNK LOO error"), ("knn_loo_error", "k-NN LOO error"),
                           ("label_variation", "label variation"), ("local_dim", "local dimension")):
            for name in spec["layers"]:
                if name == INPUT:
                    continue
                values = np.array([r[key] for r in by_layer[name]])
                out.append({"signal": label, "layer": name, **selection_stats(values, test, epochs)})
        last = first[-1]
        for r in out:
            r["test_error_last"] = last["test_error"]
        return out

    # ------------------------------------------------------------------ outputs
    def _tables(self, spec, ctx, rows, selection, comparison, width_rows) -> list[Path]:
        an = spec["analysis"]
        epochs = sorted({r["epoch"] for r in rows})
        shown = sorted({epochs[0], epochs[len(epochs) // 4], epochs[len(epochs) // 2], epochs[(3 * len(epochs)) // 4], epochs[-1]})
        cols = [Column("epoch", "epoch"), Column("layer", "layer"), Column("test_error", "test err %", ".1f", 100),
                Column("train_error", "train err %", ".1f", 100), Column("nnk_loo_error", "NNK LOO err %", ".1f", 100),
                Column("knn_loo_error", "k-NN LOO err %", ".1f", 100), Column("nnk_neighbors", "NNK nbrs", ".2f"),
                Column("diameter", "diameter", ".3f"), Column("local_dim", "local dim", ".2f"),
                Column("label_variation", "label var.", ".3f"), Column("low_freq_share", "low-freq share", ".3f")]
        notes = (f"Geometry of {an['samples']} class-balanced *training* samples (no validation data). NNK graphs: "
                 f"{an['kernel']} kernel, k = {an['nnk_k']}; NNK nbrs, diameter (unit-normalized features, in [0, 2]) and "
                 f"local dim (directions for 90% of the energy of the vectors to the NNK neighbours) are means over nodes. "
                 f"Label variation (normalized) and spectra on the cosine {an['graph_k']}-NN LGG; low-freq share = label energy "
                 "in the C lowest frequencies of L = D - A (C = number of classes; 1 when the connected components are exactly the classes). "
                 f"Epochs shown: {shown}; every analysed epoch is in per_epoch.csv.")
        keys = [c.key for c in cols]
        md, csv = ctx.results_dir / "per_epoch.md", ctx.results_dir / "per_epoch.csv"
        write_table([r for r in rows if r["epoch"] in shown], cols, md, None,
                    title=f"{spec['name']}: layer geometry over training ({spec['profile']} profile)", notes=notes)
        atomic_write_text(csv, csv_text(rows, keys))

        scols = [Column("signal", "signal"), Column("layer", "layer"), Column("spearman", "Spearman rho vs test err", ".2f"),
                 Column("p_value", "p", ".2g"), Column("chosen_epoch", "epoch chosen"),
                 Column("test_error_at_chosen", "test err there %", ".1f", 100), Column("regret", "regret (pp)", ".1f", 100),
                 Column("test_error_last", "test err last epoch %", ".1f", 100)]
        snotes = ("Per-epoch signals computed on training samples only, compared with the test error across the analysed "
                  "epochs: Spearman rank correlation (p: two-sided test of rho = 0, epochs are not independent samples so read "
                  "it as descriptive), the first epoch where the signal is smallest (early stopping on that signal), the test "
                  "error there and its regret w.r.t. the best analysed epoch. 'test error (oracle)' is the best achievable.")
        s_md, s_csv = ctx.results_dir / "selection.md", ctx.results_dir / "selection.csv"
        write_table(selection, scols, s_md, s_csv, title=f"{spec['name']}: validation-free model selection signals", notes=snotes)

        crow = []
        for method, res in comparison.items():
            for i, la in enumerate(res["layers_a"]):
                for j, lb in enumerate(res["layers_b"]):
                    crow.append({"method": method, "layer_a": la, "layer_b": lb, "similarity": float(res["matrix"][i, j])})
        c_csv = ctx.results_dir / "comparison.csv"
        atomic_write_text(c_csv, csv_text(crow, ["method", "layer_a", "layer_b", "similarity"]))
        wcols = [Column("model", "model"), Column("name", "network"), Column("params", "parameters"),
                 Column("test_error", "test err %", ".1f", 100), Column("nnk_loo_pool", "NNK LOO err of pooled features %", ".1f", 100)]
        w_md, w_csv = ctx.results_dir / "widths.md", ctx.results_dir / "widths.csv"
        write_table(width_rows, wcols, w_md, w_csv, title=f"{spec['name']}: the two compared widths (final epoch)",
                    notes=f"NNK LOO error on the same {an['samples']} training samples as above.")
        return [md, csv, s_md, s_csv, c_csv, w_md, w_csv]

    def _figures(self, spec, ctx, rows, spectra, selection, comparison, num_classes, width_rows) -> list[Path]:
        train_config = train_config_from_fields(spec["train"], "train")
        milestones = train_config.milestone_epochs() if train_config.scheduler == "multistep" else []  # lr drops
        layers = spec["layers"]
        layer_styles = dict(zip(layers, series_styles(len(layers))))  # (colour, marker) per layer, in every figure
        colours = {n: c for n, (c, _) in layer_styles.items()}
        markers = {n: m for n, (_, m) in layer_styles.items()}
        by_layer = {n: [r for r in rows if r["layer"] == n] for n in layers}
        first = by_layer[layers[0]]
        ep = [r["epoch"] for r in first]
        paths = []

        # (1) NNK LOO error beside the test error
        fig, axes = new_figure(ncols=2, width=5.6, height=4.2)
        ax = axes[0]
        ax.plot(ep, [100 * r["test_error"] for r in first], color="black", lw=2.2, label="test error")
        ax.plot(ep, [100 * r["train_error"] for r in first], color="0.5", lw=1.5, ls="--", label="train error (eval mode)")
        for n in layers:
            ax.plot(ep, [100 * r["nnk_loo_error"] for r in by_layer[n]], color=colours[n], marker=markers[n], ms=3.5, lw=1.2,
                    label=f"NNK LOO, {n}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_yscale("log")
        ticks = [t for t in (0.2, 0.5, 1, 2, 5, 10, 20, 50) if t <= 100 * max(r["test_error"] for r in first) * 1.5]
        ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        for i, m in enumerate(milestones):
            ax.axvline(m + 0.5, color="0.7", lw=0.8, ls=":", label="lr drop" if i == 0 else None)
        ax.set_title("NNK leave-one-out error on training samples\nbeside the test error", fontsize=10)
        ax.legend(fontsize=7, ncols=2)
        ax = axes[1]
        sel = [s for s in selection if s["signal"] in ("NNK LOO error", "k-NN LOO error")]
        names = [n for n in layers if n != INPUT]
        width = 0.38
        xs = np.arange(len(names))
        for off, sig, col in ((-width / 2, "NNK LOO error", PALETTE[0]), (width / 2, "k-NN LOO error", PALETTE[1])):
            vals = [next(s["spearman"] for s in sel if s["signal"] == sig and s["layer"] == n) for n in names]
            ax.bar(xs + off, np.nan_to_num(vals), width, color=col, label=sig)
        tr = next(s for s in selection if s["signal"].startswith("train error"))["spearman"]
        ax.axhline(tr if math.isfinite(tr) else 0.0, color="0.5", ls="--", label=f"train error ({tr:.2f})")
        ax.set_xticks(xs, names)
        ax.set_ylim(-1, 1)
        ax.set_ylabel("Spearman rho with the test error")
        ax.set_title("rank correlation across epochs\n(1 = ranks epochs like the test error)", fontsize=10)
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, ctx.figures_dir / "nnk_loo_vs_test.png"))

        # (2) manifold graph metrics per layer and epoch
        fig, axes = new_figure(ncols=3, width=4.2, height=3.8)
        panels = (("nnk_neighbors", "NNK neighbours per node", "NNK neighbours per node (mean)"),
                  ("diameter", "NNK polytope diameter", "polytope diameter (mean over nodes)"),
                  ("local_dim", "local dimension (90% energy)", "local dimension (mean over nodes)"))
        for ax, (key, title, ylabel) in zip(axes, panels):
            for n in layers:
                ax.plot(ep, [r[key] for r in by_layer[n]], color=colours[n], marker=markers[n], ms=3.5, label=n)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title} (mean over nodes)", fontsize=10)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9, frameon=False)
        fig.suptitle(f"Manifold graph metrics of the NNK graphs ({spec['analysis']['kernel']} kernel, k = {spec['analysis']['nnk_k']}) "
                     f"of {spec['analysis']['samples']} training samples", fontsize=10)
        paths.append(save_figure(fig, ctx.figures_dir / "manifold_metrics.png"))

        # (3) label spectra
        fig, axes = new_figure(ncols=2, width=5.6, height=4.2)
        ax = axes[0]
        styles = dict(zip(sorted(spec["analysis"]["spectrum_epochs"]), ["--", "-", ":", "-."] * 4))
        for epoch, n in sorted(spectra, key=lambda en: (en[0], layers.index(en[1]))):
            _, energy = spectra[(epoch, n)]
            if n == INPUT and epoch != min(styles):
                continue
            cum = np.cumsum(energy) / energy.sum()
            ax.plot(np.arange(1, len(cum) + 1), cum, color=colours[n], ls=styles[epoch], lw=1.4, marker=markers[n], ms=3.5,
                    markevery=0.12, label=n if n == INPUT else f"{n}, epoch {epoch}")
        ax.axvline(num_classes, color="0.6", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("number of lowest graph frequencies (eigenvectors of L = D - A)")
        ax.set_ylabel("cumulative share of label energy")
        ax.set_title(f"label-signal energy in the lowest graph frequencies\n(dotted: {num_classes} = number of classes; "
                     "higher = smoother labels)", fontsize=10)
        ax.legend(fontsize=7)
        ax = axes[1]
        for n in layers:
            ax.plot(ep, [r["low_freq_share"] for r in by_layer[n]], color=colours[n], marker=markers[n], ms=3.5, label=n)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"label energy in the {num_classes} lowest frequencies")
        ax.set_ylim(0, 1.02)
        ax.set_title("low-frequency share of the labels per epoch\n(1 = the classes are the connected components)", fontsize=10)
        ax.legend(fontsize=8)
        fig.suptitle(f"Label spectra on the cosine {spec['analysis']['graph_k']}-NN LGG of {spec['analysis']['samples']} training samples",
                     fontsize=10)
        paths.append(save_figure(fig, ctx.figures_dir / "label_spectra.png"))

        # (4) comparison heatmaps
        names = {"lgg": "LGG similarity (full graphs)", "lgg_knn": f"LGG similarity ({spec['comparison']['lgg_k']}-NN graphs)",
                 "cka": "linear CKA", "knn_overlap": f"mutual {spec['comparison']['knn_k']}-NN overlap"}
        renamed = {names.get(m, m): r for m, r in comparison.items()}
        a, b = width_rows
        paths.append(plot_similarity_heatmaps(renamed, ctx.figures_dir / "comparison.png",
                                              names=(f"{a['name']} (A)", f"{b['name']} (B)")))
        return paths


def _width_tag(entry: dict[str, Any]) -> str:
    width = entry["kwargs"].get("width")
    return f"w{width}" if width is not None else "default"


def _test_errors(run_dir: Path) -> dict[int, float]:
    import json

    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[int(rec["epoch"])] = float(rec["test_error"])
    return out
