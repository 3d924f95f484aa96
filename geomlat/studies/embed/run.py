"""Running an ``embed`` study: training every method and seed (recording the figure's embeddings),
the classifiers' clean and corrupted errors, the tables."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...classifiers import KNNClassifier, LogisticRegressionClassifier, NearestClassMean, embed
from ...engine import TrainConfig, read_json, train, write_json
from ...io import atomic_save, atomic_write_text, load_checkpoint
from ...objectives import BottleneckCrossEntropy
from ..common import STORAGE_VERSION, build, corrupted_sets, corruption_notes, load_splits, mce_pair, subset
from ..runner import RunPlan, StudyContext
from ..tables import Column, csv_text, median_std, paired_rows, paired_text, write_paired_table, write_table
from .figures import embeddings_figure
from .spec import make_objective

__all__ = ["run", "build_run", "validation_errors", "ncm_error"]


CLASSIFIER_TITLES = {"argmax": "argmax (own head)", "knn": "k-NN", "ncm": "nearest class mean", "logreg": "logistic regression"}


def _class_scores(objective: nn.Module, x: Tensor) -> Tensor:
    return objective.logits(x) if isinstance(objective, BottleneckCrossEntropy) else objective.model(x)


def run(spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
    splits = load_splits(spec["data"], ctx.data_dir)
    seeds, methods = spec["seeds"], spec["methods"]
    ctx.log(f"[{ctx.name}/{ctx.profile}] {len(seeds) * len(methods)} runs under {ctx.runs_dir}")
    cor = spec["corruptions"]
    x_cor, y_cor = subset(splits.test, cor["samples"], cor["seed"])
    x_fig, y_fig = subset(splits.train, spec["figure"]["samples"], 2)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in seeds:
        for name in methods:
            run_dir = ctx.runs_dir / f"{name}_s{seed}"
            plan = build_run(spec, name, seed, splits)
            record_epochs = spec["figure"]["epochs"] if (name in spec["figure"]["methods"] and seed == seeds[0]) else []
            evaluate = recording_hook(plan.evaluate, run_dir, x_fig, record_epochs)
            if 0 in record_epochs and not (run_dir / "final.json").exists():
                save_embedding(run_dir, 0, plan.objective.model, x_fig)
            ctx.log(f"[{ctx.name}/{ctx.profile}] training {run_dir.name}")
            train(plan.objective, splits, plan.config, run_dir, evaluate=evaluate, progress=ctx.progress, record=plan.record)
            results[(name, seed)] = evaluate_run(spec, ctx, run_dir, name, plan.objective, splits, x_cor, y_cor)
    rows, per_run = table_rows(spec, results)
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    paths = write_tables(spec, ctx, rows, per_run)
    if spec["figure"]["methods"]:
        paths.append(embeddings_figure(spec, ctx, y_fig))
    return {"rows": rows, "runs": per_run, "paths": [str(p) for p in paths]}


def save_embedding(run_dir: Path, epoch: int, model: nn.Module, x: Tensor) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_save({"epoch": epoch, "embedding": embed(model, x)}, run_dir / "embeddings" / f"epoch_{epoch}.pt")


def build_run(spec: dict[str, Any], name: str, seed: int, splits) -> RunPlan:
    """The run of method ``name`` and ``seed`` (``torch.manual_seed(seed)`` before building the model): the
    engine's per-epoch ``test_error`` is the nearest-class-mean error of the embedding (:func:`ncm_error`)."""
    method = spec["methods"][name]
    torch.manual_seed(seed)
    objective = make_objective(method, build(spec["model"], out_dim=method["out_dim"]), splits.num_classes)
    record = {"method": name, "loss": method["loss"], "out_dim": method["out_dim"], "kwargs": method["kwargs"],
              "model": spec["model"]}
    return RunPlan(objective, TrainConfig.from_dict({**method["train"], "seed": seed}), evaluate=ncm_error, record=record)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def ncm_error(model: nn.Module, splits) -> dict[str, float]:
    """Engine ``evaluate``: nearest-class-mean error on ``splits.test`` of the embedding (label-variation
    outputs are no class scores), classifier fitted on the training embedding; inputs sent to the model's device."""
    x_tr, y_tr = splits.train.tensors
    x_te, y_te = splits.test.tensors
    ncm = NearestClassMean().fit(embed(model, x_tr, device=_device(model)), y_tr)
    return {"test_error": ncm.error(embed(model, x_te, device=_device(model)), y_te)}


def recording_hook(evaluate, run_dir: Path, x_fig: Tensor, record_epochs: list[int]):
    """``evaluate`` that also saves the figure embeddings after the listed epochs (the engine passes
    ``epoch=``, the epochs done, so the epoch is right after a resume whatever ``eval_every``)."""

    def hook(model: nn.Module, splits, epoch: int) -> dict[str, float]:
        if epoch in record_epochs:
            save_embedding(run_dir, epoch, model, x_fig)
        return evaluate(model, splits)

    return hook


def validation_errors(spec: dict[str, Any], objective: nn.Module, splits) -> dict[str, float]:
    """k-NN, nearest-class-mean and logistic-regression errors on ``splits.test`` (the validation split of
    ``--tune``) of the trained embedding, classifiers fitted on the training embedding."""
    model, device = objective.model, _device(objective)
    x_tr, y_tr = splits.train.tensors
    x_va, y_va = splits.test.tensors
    e_tr, e_va = embed(model, x_tr, device=device), embed(model, x_va, device=device)
    return {name: make_classifier(name, spec).fit(e_tr, y_tr).error(e_va, y_va) for name in ("knn", "ncm", "logreg")}


def make_classifier(name: str, spec):
    return {"knn": lambda: KNNClassifier(spec["knn_k"]), "ncm": NearestClassMean,
            "logreg": LogisticRegressionClassifier}[name]()


def evaluate_run(spec, ctx, run_dir: Path, name: str, objective, splits, x_cor, y_cor) -> dict[str, Any]:
    path = run_dir / "eval.json"
    if path.exists() and read_json(path).get("storage") == STORAGE_VERSION:  # else made on other corrupted sets
        return read_json(path)
    device = next(objective.parameters()).device
    objective.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", map_location=device)["objective"])
    objective.eval()
    model = objective.model
    x_tr, y_tr = splits.train.tensors
    x_te, y_te = splits.test.tensors
    ce = spec["methods"][name]["loss"] == "cross_entropy"
    names = [c for c in spec["classifiers"] if c != "argmax" or ce]
    fitted = {c: make_classifier(c, spec).fit(embed(model, x_tr, device=device), y_tr) for c in names if c != "argmax"}

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


def references(spec) -> dict[str, str]:
    """Each method's reference for paired differences: the cross-entropy method with the same output width (the
    same network and head), else the study's baseline; the references themselves against the baseline."""
    methods = spec["methods"]
    ce: dict[int, str] = {}
    for name, m in methods.items():   # the first cross-entropy method of each width (spec order)
        if m["loss"] == "cross_entropy":
            ce.setdefault(m["out_dim"], name)
    refs = {name: ce.get(m["out_dim"], spec["baseline"]) for name, m in methods.items()}
    return {name: (spec["baseline"] if ref == name else ref) for name, ref in refs.items()}


def paired_comparisons(spec, per_run) -> list[dict[str, Any]]:
    """Clean error and mCE of each method minus its reference's, same seed and classifier, then the spec's extra
    ``comparisons`` (``paired_rows``)."""
    pairs = list(references(spec).items()) + spec["comparisons"]
    return paired_rows(per_run, ["clean", "mce"], pairs, group=["classifier"])


def table_rows(spec, results):
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
    refs = references(spec)
    paired = {(d["method"], d["classifier"]): d for d in paired_comparisons(spec, per_run)
              if d["metric"] == "clean" and d["reference"] == refs[d["method"]]}
    for row in rows:
        d = paired.get((row["method"], row["classifier"]))
        row["paired_clean"] = paired_text(d)
        row["paired_reference"] = spec["methods"][d["reference"]]["label"] if d else None
        row.update({f"paired_clean_{k}": d[k] if d else None for k in ("mean", "lo", "hi", "p")})
    return rows, per_run


def write_tables(spec, ctx, rows, per_run) -> list[Path]:
    cols = [Column("label", "Objective"), Column("out_dim", "Output dim"), Column("classifier_title", "Classifier"),
            Column("clean", "Clean error (%)", ".2f", 100.0), Column("clean_std", "±", ".2f", 100.0),
            Column("mce", "mCE", ".1f"), Column("mce_std", "±", ".1f"),
            Column("rel_mce", "Relative mCE", ".1f"), Column("rel_mce_std", "±", ".1f"),
            Column("paired_reference", "Compared with"),
            Column("paired_clean", "Paired clean error difference (points) [95% CI]")]
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
    notes += (" Paired clean error difference: the row's clean error minus that of its reference (\"Compared with\": the "
              "cross-entropy network with the same output width, else the baseline; the baseline's other-width "
              "cross-entropy networks against the baseline), same classifier and seed, mean over seeds with its 95% "
              "Student-t interval (negative = fewer errors); paired.md adds the mCE, the spec's comparisons, p-values "
              "and readings.")
    md, csv = ctx.results_dir / "table.md", ctx.results_dir / "table.csv"
    keys = ["method", "label", "loss", "out_dim", "classifier", "n", "clean", "clean_std", "mce", "mce_std", "rel_mce",
            "rel_mce_std", "paired_reference", "paired_clean_mean", "paired_clean_lo", "paired_clean_hi", "paired_clean_p"]
    write_table(rows, cols, md, csv, title=f"Cross-entropy vs label variation ({ctx.profile} profile)", notes=notes, csv_keys=keys)
    paired_md, paired_csv = ctx.results_dir / "paired.md", ctx.results_dir / "paired.csv"
    write_paired_table(paired_comparisons(spec, per_run), {m: spec["methods"][m]["label"] for m in spec["methods"]},
                       {"clean": ("Clean error (points)", 100.0, ".2f"), "mce": ("mCE", 1.0, ".1f")}, paired_md, paired_csv,
                       title=f"Each objective vs its cross-entropy reference, paired by seed ({ctx.profile} profile)",
                       group=[("classifier", "Classifier")], group_titles=CLASSIFIER_TITLES)
    runs_csv = ctx.results_dir / "runs.csv"
    atomic_write_text(runs_csv, csv_text(per_run, ["method", "classifier", "seed", "clean", "mce", "rel_mce"]))
    return [md, csv, paired_md, paired_csv, runs_csv]
