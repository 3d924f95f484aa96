"""Study kind ``embed``: cross-entropy vs the label-variation objective (LGG paper Section 4.2, Table 2,
Appendix E / Figure A1), each network's output embedding classified by simple classifiers.

Spec fields (see ``studies/embed.toml``):

- ``data``, ``model``, ``train``, ``corruptions``: as in the ``robust`` kind.
- ``methods.NAME``: ``label``; ``loss`` = ``"cross_entropy"`` or ``"label_variation"``; ``out_dim``: width of
  the embedding (default: the number of classes). Cross-entropy with ``out_dim`` != classes trains through
  a linear head on the ``out_dim``-wide bottleneck (:class:`geomlat.losses.objectives.BottleneckCrossEntropy`,
  as the paper did for its 2-D embeddings); the embedding is the bottleneck. ``kwargs``: arguments of
  :class:`geomlat.losses.LabelVariationLoss` (label variation only); ``train``: per-method overrides.
- ``classifiers``: any of ``"argmax"`` (the network's own class scores; cross-entropy methods only),
  ``"knn"``, ``"ncm"`` (nearest class mean), ``"logreg"``, all fitted on the training-set embedding.
  ``knn_k`` (default 5).
- ``baseline``: reference method of mCE / relative mCE (a cross-entropy method; each row is compared
  with the baseline's row of the same classifier and seed, ``argmax`` rows with its argmax).
- ``figure``: ``methods`` (2-D methods drawn, Figure A1), ``epochs`` (0 = before training), ``samples``
  (class-balanced training points drawn). The embeddings are recorded by the engine's ``evaluate`` hook
  after each listed epoch (``RUN/embeddings/epoch_E.pt``) for the first seed.

During training, the per-epoch ``test_error`` recorded by the engine is the nearest-class-mean error of the
embedding (the same for every method, since label-variation outputs are not class scores).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..classifiers import KNNClassifier, LogisticRegressionClassifier, NearestClassMean, embed
from ..engine import Supervised, TrainConfig, read_json, train, write_json
from ..engine.io import atomic_save, atomic_write_text, load_checkpoint
from ..losses.embedding import LabelVariationLoss
from ..losses.objectives import BottleneckCrossEntropy, LabelVariationObjective
from .figures import save_figure, series_styles
from .robust import (IMAGE_SHAPES, STORAGE_VERSION, build, corrupted_sets, corruption_fields, corruption_notes, data_fields, load_splits,
                     mce_pair, model_fields, subset, train_config)
from .runner import StudyContext, StudyKind, register_study_kind
from .spec import Fields, SpecError
from .tables import Column, csv_text, median_std, write_table

__all__ = ["EmbedStudy", "LOSSES", "CLASSIFIERS"]

LOSSES = ("cross_entropy", "label_variation")
CLASSIFIERS = ("argmax", "knn", "ncm", "logreg")
CLASSIFIER_TITLES = {"argmax": "argmax (own head)", "knn": "k-NN", "ncm": "nearest class mean", "logreg": "logistic regression"}


def make_objective(method: dict[str, Any], model: nn.Module, num_classes: int) -> nn.Module:
    if method["loss"] == "label_variation":
        return LabelVariationObjective(model, LabelVariationLoss(**method["kwargs"]))
    if method["out_dim"] == num_classes:
        return Supervised(model)
    return BottleneckCrossEntropy(model, num_classes)


def _class_scores(objective: nn.Module, x: Tensor) -> Tensor:
    return objective.logits(x) if isinstance(objective, BottleneckCrossEntropy) else objective.model(x)


@register_study_kind("embed")
class EmbedStudy(StudyKind):
    """Embedding study (see the module docstring for the spec)."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        data = data_fields(fields)
        model = model_fields(fields)
        common = fields.table_("train", {})
        train_config(common, "train")
        num_classes = int(model["kwargs"].get("num_classes", 10))
        methods_f = fields.fields("methods")
        if not methods_f.table:
            raise SpecError("methods", "declare at least one method")
        x = torch.rand((8, *IMAGE_SHAPES[data["name"]]), generator=torch.Generator().manual_seed(0))
        y = torch.arange(8) % 2
        methods = {}
        for name in methods_f.table:
            mf = methods_f.fields(name)
            m = {"label": mf.str("label", name), "loss": mf.str("loss", choices=LOSSES),
                 "out_dim": mf.int("out_dim", num_classes, minimum=1), "kwargs": mf.table_("kwargs", {})}
            if m["loss"] == "cross_entropy" and m["kwargs"]:
                raise SpecError(mf.sub("kwargs"), "cross-entropy takes no kwargs")
            own = mf.table_("train", {})
            train_config(own, mf.sub("train"))
            m["train"] = train_config({**common, **own}, mf.sub("train")).to_dict()
            mf.finish()
            try:
                objective = make_objective(m, build(model, out_dim=m["out_dim"]), num_classes)
                objective.train()
                _, losses = objective(x, y)
                sum(losses.values()).backward()
            except (KeyError, ValueError, TypeError, RuntimeError) as err:
                raise SpecError(f"methods.{name}", f"the objective fails on a dummy batch: {err}") from err
            methods[name] = m
        classifiers = fields.list("classifiers", list(CLASSIFIERS), item=str, nonempty=True)
        for i, c in enumerate(classifiers):
            if c not in CLASSIFIERS:
                raise SpecError(f"classifiers[{i}]", f"unknown classifier {c!r}; expected one of {list(CLASSIFIERS)}")
        baseline = fields.str("baseline", "ce")
        if baseline not in methods:
            raise SpecError("baseline", f"method {baseline!r} is not declared in `methods` ({sorted(methods)})")
        if methods[baseline]["loss"] != "cross_entropy":
            raise SpecError("baseline", "the baseline of the relative mCE must be a cross-entropy method")
        knn_k = fields.int("knn_k", 5, minimum=1)
        ff = fields.fields("figure", {})
        default_fig = [n for n, m in methods.items() if m["out_dim"] == 2]
        figure = {"methods": ff.list("methods", default_fig, item=str), "samples": ff.int("samples", 1000, minimum=10)}
        epochs = ff.list("epochs", [0], item=int)
        for i, n in enumerate(figure["methods"]):
            if n not in methods:
                raise SpecError(f"figure.methods[{i}]", f"unknown method {n!r}; declared: {sorted(methods)}")
            if methods[n]["out_dim"] != 2:
                raise SpecError(f"figure.methods[{i}]", f"method {n!r} has out_dim {methods[n]['out_dim']}; the figure draws 2-D embeddings")
        for i, e in enumerate(epochs):
            max_epochs = min((methods[n]["train"]["epochs"] for n in figure["methods"]), default=e)
            if not 0 <= e <= max_epochs:
                raise SpecError(f"figure.epochs[{i}]", f"epoch {e} outside 0..{max_epochs}")
        figure["epochs"] = sorted(set(epochs))
        ff.finish()
        return {"data": data, "model": model, "methods": methods, "classifiers": classifiers, "knn_k": knn_k,
                "baseline": baseline, "figure": figure, "corruptions": corruption_fields(fields)}

    # ---------------------------------------------------------------------------------------- running
    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        splits = load_splits(spec["data"], ctx)
        seeds, methods = spec["seeds"], spec["methods"]
        ctx.log(f"[{ctx.name}/{ctx.profile}] {len(seeds) * len(methods)} runs under {ctx.runs_dir}")
        cor = spec["corruptions"]
        x_cor, y_cor = subset(splits.test, cor["samples"], cor["seed"])
        x_fig, y_fig = subset(splits.train, spec["figure"]["samples"], 2)
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for seed in seeds:
            for name, method in methods.items():
                run_dir = ctx.runs_dir / f"{name}_s{seed}"
                torch.manual_seed(seed)
                model = build(spec["model"], out_dim=method["out_dim"])
                objective = make_objective(method, model, splits.num_classes)
                config = TrainConfig.from_dict({**method["train"], "seed": seed})
                record_epochs = spec["figure"]["epochs"] if (name in spec["figure"]["methods"] and seed == seeds[0]) else []
                evaluate = self._evaluate_hook(run_dir, x_fig, record_epochs, config)
                if 0 in record_epochs and not (run_dir / "final.json").exists():
                    self._save_embedding(run_dir, 0, model, x_fig)
                ctx.log(f"[{ctx.name}/{ctx.profile}] training {run_dir.name}")
                train(objective, splits, config, run_dir, evaluate=evaluate, progress=ctx.progress,
                      record={"method": name, "loss": method["loss"], "out_dim": method["out_dim"],
                              "kwargs": method["kwargs"], "model": spec["model"]})
                results[(name, seed)] = self._evaluate(spec, ctx, run_dir, objective, splits, x_cor, y_cor)
        rows, per_run = self._rows(spec, results)
        ctx.results_dir.mkdir(parents=True, exist_ok=True)
        paths = self._write(spec, ctx, rows, per_run)
        if spec["figure"]["methods"]:
            paths.append(self._figure(spec, ctx, y_fig))
        return {"rows": rows, "runs": per_run, "paths": [str(p) for p in paths]}

    @staticmethod
    def _save_embedding(run_dir: Path, epoch: int, model: nn.Module, x: Tensor) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_save({"epoch": epoch, "embedding": embed(model, x)}, run_dir / "embeddings" / f"epoch_{epoch}.pt")

    def _evaluate_hook(self, run_dir: Path, x_fig: Tensor, record_epochs: list[int], config: TrainConfig):
        """Engine ``evaluate``: nearest-class-mean test error; saves the figure embeddings at listed epochs.
        The epoch is counted from the calls (eval_every epochs apart), resuming from metrics.jsonl."""
        state = {"epoch": None}

        def evaluate(model: nn.Module, splits) -> dict[str, float]:
            if state["epoch"] is None:
                done = run_dir / "metrics.jsonl"
                state["epoch"] = len(done.read_text().splitlines()) if done.exists() else 0
            state["epoch"] = min(state["epoch"] + config.eval_every, config.epochs)
            if state["epoch"] in record_epochs:
                self._save_embedding(run_dir, state["epoch"], model, x_fig)
            x_tr, y_tr = splits.train.tensors
            x_te, y_te = splits.test.tensors
            ncm = NearestClassMean().fit(embed(model, x_tr), y_tr)
            return {"test_error": ncm.error(embed(model, x_te), y_te)}

        return evaluate

    def _classifier(self, name: str, spec):
        return {"knn": lambda: KNNClassifier(spec["knn_k"]), "ncm": NearestClassMean,
                "logreg": LogisticRegressionClassifier}[name]()

    def _evaluate(self, spec, ctx, run_dir: Path, objective, splits, x_cor, y_cor) -> dict[str, Any]:
        path = run_dir / "eval.json"
        if path.exists() and read_json(path).get("storage") == STORAGE_VERSION:  # else made on other corrupted sets
            return read_json(path)
        device = next(objective.parameters()).device
        objective.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", map_location=device)["objective"])
        objective.eval()
        model = objective.model
        x_tr, y_tr = splits.train.tensors
        x_te, y_te = splits.test.tensors
        ce = spec["methods"][run_dir.name.rsplit("_s", 1)[0]]["loss"] == "cross_entropy"
        names = [c for c in spec["classifiers"] if c != "argmax" or ce]
        fitted = {c: self._classifier(c, spec).fit(embed(model, x_tr, device=device), y_tr) for c in names if c != "argmax"}

        def errors(x: Tensor, y: Tensor) -> dict[str, float]:
            emb = embed(model, x, device=device)
            out = {c: clf.error(emb, y) for c, clf in fitted.items()}
            if "argmax" in names:
                with torch.no_grad():
                    pred = torch.cat([_class_scores(objective, x[i:i + 512].to(device)).argmax(1).cpu() for i in range(0, len(x), 512)])
                out["argmax"] = float((pred != y).float().mean())
            return out

        result: dict[str, Any] = {"clean": errors(x_te, y_te), "clean_cor": errors(x_cor, y_cor),
                                  "corruptions": {c: {} for c in names}, "storage": STORAGE_VERSION}
        cor = spec["corruptions"]
        for cname, _, xc in corrupted_sets(x_cor, cor["names"], cor["severities"], cor["seed"], ctx.runs_dir / "corrupted"):
            for c, e in errors(xc, y_cor).items():
                result["corruptions"][c].setdefault(cname, []).append(e)
        write_json(path, result)
        return result

    def _rows(self, spec, results):
        base = spec["baseline"]
        per_run, rows = [], []
        for (name, seed), r in results.items():
            b = results[(base, seed)]
            for c in spec["classifiers"]:
                if c not in r["clean"]:
                    continue
                bc = c if c in b["clean"] else "argmax"
                m, rel, dropped = mce_pair(r["corruptions"][c], r["clean_cor"][c], b["corruptions"][bc], b["clean_cor"][bc])
                per_run.append({"method": name, "classifier": c, "seed": seed, "clean": r["clean"][c], "mce": m,
                                "rel_mce": rel, "rel_dropped": dropped})
        for name, method in spec["methods"].items():
            for c in spec["classifiers"]:
                lines = [line for line in per_run if line["method"] == name and line["classifier"] == c]
                if not lines:
                    continue
                row = {"method": name, "label": method["label"], "loss": method["loss"], "out_dim": method["out_dim"],
                       "classifier": c, "classifier_title": CLASSIFIER_TITLES[c], "n": len(lines)}
                for k in ("clean", "mce", "rel_mce"):
                    row[k], row[f"{k}_std"], _ = median_std(line[k] for line in lines)
                rows.append(row)
        return rows, per_run

    def _write(self, spec, ctx, rows, per_run) -> list[Path]:
        cols = [Column("label", "Objective"), Column("out_dim", "Output dim"), Column("classifier_title", "Classifier"),
                Column("clean", "Clean error (%)", ".2f", 100.0), Column("clean_std", "±", ".2f", 100.0),
                Column("mce", "mCE", ".1f"), Column("mce_std", "±", ".1f"),
                Column("rel_mce", "Relative mCE", ".1f"), Column("rel_mce_std", "±", ".1f")]
        cor = spec["corruptions"]
        dropped = sorted({c for line in per_run for c in line["rel_dropped"]})
        base = spec["methods"][spec["baseline"]]["label"]
        notes = (f"Median ± std over {len(spec['seeds'])} seeds ({spec['data']['name']}, {spec['model']['model']} "
                 f"{spec['model']['kwargs']}). Classifiers are fitted on the embedding of the whole training set; "
                 f"k-NN uses k = {spec['knn_k']}. mCE and relative mCE (Hendrycks & Dietterich) against "
                 f"\"{base}\" with the same classifier and seed (argmax rows: the baseline's argmax), over "
                 f"{len(cor['names'])} corruptions x severities {cor['severities']} on {cor['samples'] or 'all'} test images. ")
        if dropped:
            notes += ("Left out of the relative mCE where they do not raise the baseline's error (undefined ratio): "
                      + ", ".join(f"`{c}`" for c in dropped) + ". ")
        notes += corruption_notes(cor["names"])
        md, csv = ctx.results_dir / "table.md", ctx.results_dir / "table.csv"
        keys = ["method", "label", "loss", "out_dim", "classifier", "n", "clean", "clean_std", "mce", "mce_std", "rel_mce", "rel_mce_std"]
        write_table(rows, cols, md, csv, title=f"Cross-entropy vs label variation ({ctx.profile} profile)", notes=notes, csv_keys=keys)
        runs_csv = ctx.results_dir / "runs.csv"
        atomic_write_text(runs_csv, csv_text(per_run, ["method", "classifier", "seed", "clean", "mce", "rel_mce"]))
        return [md, csv, runs_csv]

    def _figure(self, spec, ctx, y_fig: Tensor) -> Path:
        fig_spec, seed = spec["figure"], spec["seeds"][0]
        names, epochs = fig_spec["methods"], fig_spec["epochs"]
        from matplotlib.figure import Figure
        import seaborn as sns

        with sns.axes_style("white"):
            fig = Figure(figsize=(2.6 * len(epochs), 2.7 * len(names) + 0.4), layout="constrained")
            axes = fig.subplots(len(names), len(epochs), squeeze=False)
        from matplotlib.lines import Line2D

        classes = sorted(int(c) for c in y_fig.unique())
        styles = dict(zip(classes, series_styles(len(classes))))  # (colour, marker) per class
        labels_np = y_fig.numpy()
        for i, name in enumerate(names):
            for j, epoch in enumerate(epochs):
                ax = axes[i, j]
                path = ctx.runs_dir / f"{name}_s{seed}" / "embeddings" / f"epoch_{epoch}.pt"
                if path.exists():
                    emb = load_checkpoint(path)["embedding"].numpy()
                    for c in classes:
                        sel = labels_np == c
                        ax.scatter(emb[sel, 0], emb[sel, 1], color=styles[c][0], marker=styles[c][1], s=7, alpha=0.75,
                                   linewidths=0)
                else:
                    ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"epoch {epoch}" + (" (init)" if epoch == 0 else ""))
                if j == 0:
                    ax.set_ylabel(spec["methods"][name]["label"], fontsize=9)
        handles = [Line2D([], [], ls="", color=styles[c][0], marker=styles[c][1], ms=6, label=f"class {c}") for c in classes]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(classes), fontsize=9, frameon=False,
                   handletextpad=0.2, columnspacing=1.0)
        fig.suptitle(f"2-D embeddings of {len(y_fig)} training points ({spec['data']['name']}, seed {seed}; "
                     "colour and marker = class)")
        ctx.figures_dir.mkdir(parents=True, exist_ok=True)
        return save_figure(fig, ctx.figures_dir / "embeddings_2d.png")
