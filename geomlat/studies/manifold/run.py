"""Running a ``manifold`` study: model A with per-epoch snapshots, the geometry of its layers over
training, model B and the comparison, the model-selection statistics and the tables."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...analysis import ManifoldGraphMetrics, compare_models, fourier_basis, knn_decisions
from ...data import balanced_order
from ...engine import evaluate_accuracy, predict
from ...io import atomic_save, atomic_write_text, load_checkpoint
from ...graphs import latent_graph
from ...models import count_parameters
from ...nnk import nnk_interpolation
from ...signals import label_variation
from ..common import INPUT, blas_threads, layer_features, load_splits, train_config_from_fields, train_model
from ..runner import StudyContext
from ..tables import Column, csv_text, write_table
from .figures import figures

__all__ = ["run", "SnapshotHook", "layer_geometry", "selection_stats"]


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
    over the analyzed epochs)}``.
    """
    signal, test_error = np.asarray(signal, float), np.asarray(test_error, float)
    rho, p = _spearman(signal, test_error)
    i = int(np.argmin(signal))  # first minimum
    return {"spearman": rho, "p_value": p, "chosen_epoch": int(epochs[i]), "test_error_at_chosen": float(test_error[i]),
            "regret": float(test_error[i] - test_error.min())}


def run(spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
    data, an, cmp_ = spec["data"], spec["analysis"], spec["comparison"]
    splits = load_splits(data, ctx.data_dir)
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
    selection = selection_rows(rows, spec)
    paths = write_tables(spec, ctx, rows, selection, comparison, width_rows)
    paths += figures(spec, ctx, rows, spectra, selection, comparison, splits.num_classes, width_rows)
    return {"rows": rows, "selection": selection, "paths": [str(p) for p in paths]}


def selection_rows(rows: list[dict], spec: dict) -> list[dict]:
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


def write_tables(spec, ctx, rows, selection, comparison, width_rows) -> list[Path]:
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
             f"local dim (directions for 90% of the energy of the vectors to the NNK neighbors) are means over nodes. "
             f"Label variation (normalized) and spectra on the cosine {an['graph_k']}-NN LGG; low-freq share = label energy "
             "in the C lowest frequencies of L = D - A (C = number of classes; 1 when the connected components are exactly the classes). "
             f"Epochs shown: {shown}; every analyzed epoch is in per_epoch.csv.")
    keys = [c.key for c in cols]
    md, csv = ctx.results_dir / "per_epoch.md", ctx.results_dir / "per_epoch.csv"
    write_table([r for r in rows if r["epoch"] in shown], cols, md, None,
                title=f"{spec['name']}: layer geometry over training ({spec['profile']} profile)", notes=notes)
    atomic_write_text(csv, csv_text(rows, keys))

    scols = [Column("signal", "signal"), Column("layer", "layer"), Column("spearman", "Spearman rho vs test err", ".2f"),
             Column("p_value", "p", ".2g"), Column("chosen_epoch", "epoch chosen"),
             Column("test_error_at_chosen", "test err there %", ".1f", 100), Column("regret", "regret (pp)", ".1f", 100),
             Column("test_error_last", "test err last epoch %", ".1f", 100)]
    snotes = ("Per-epoch signals computed on training samples only, compared with the test error across the analyzed "
              "epochs: Spearman rank correlation (p: two-sided test of rho = 0, epochs are not independent samples so read "
              "it as descriptive), the first epoch where the signal is smallest (early stopping on that signal), the test "
              "error there and its regret w.r.t. the best analyzed epoch. 'test error (oracle)' is the best achievable.")
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


def _width_tag(entry: dict[str, Any]) -> str:
    width = entry["kwargs"].get("width")
    return f"w{width}" if width is not None else "default"


def _test_errors(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[int(rec["epoch"])] = float(rec["test_error"])
    return out
