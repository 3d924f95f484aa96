"""Running a ``robust`` study: training every method and seed, clean / attacked / corrupted errors, the tables."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ...engine import TrainConfig, read_json, train, write_json
from ...io import atomic_write_text, load_checkpoint
from ...robustness import ParsevalRetraction, fgsm, pgd
from ..common import (STORAGE_VERSION, build, corrupted_sets, corruption_notes, load_splits, mce_pair, seconds_per_epoch,
                      subset)
from ..runner import RunPlan, StudyContext
from ..tables import Column, csv_text, median_std, paired_rows, paired_text, write_paired_table, write_table
from .figures import severity_figure
from .spec import make_objective

__all__ = ["run", "build_run", "validation_errors"]


def _error_of(predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch: int = 512) -> float:
    wrong = sum(int((predict(x[i:i + batch]).cpu() != y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return wrong / len(y)


def run(spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
    splits = load_splits(spec["data"], ctx.data_dir)
    seeds, methods = spec["seeds"], spec["methods"]
    ctx.log(f"[{ctx.name}/{ctx.profile}] {len(seeds) * len(methods)} runs under {ctx.runs_dir}")
    cor = spec["corruptions"]
    x_cor, y_cor = subset(splits.test, cor["samples"], cor["seed"])
    x_att, y_att = subset(splits.test, spec["attacks"]["samples"], 1)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for seed in seeds:  # seeds outer: the methods of a seed run back to back (fair timings)
        for name in methods:
            run_dir = ctx.runs_dir / f"{name}_s{seed}"
            plan = build_run(spec, name, seed)
            ctx.log(f"[{ctx.name}/{ctx.profile}] training {run_dir.name}")
            train(plan.objective, splits, plan.config, run_dir, after_step=plan.after_step, progress=ctx.progress,
                  record=plan.record)
            results[(name, seed)] = evaluate_run(spec, ctx, run_dir, plan.objective, splits, x_att, y_att, x_cor, y_cor)
    rows, per_run = table_rows(spec, results)
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    paths = write_tables(spec, ctx, rows, per_run)
    paths.append(severity_figure(spec, ctx, results))
    return {"rows": rows, "runs": per_run, "paths": [str(p) for p in paths]}


def build_run(spec: dict[str, Any], name: str, seed: int) -> RunPlan:
    """The run of method ``name`` and ``seed``: every method of a seed starts from the same initialization
    (``torch.manual_seed(seed)`` before building the model); Parseval methods retract after every step."""
    method = spec["methods"][name]
    torch.manual_seed(seed)
    objective = make_objective(method, build(spec["model"]), seed)
    after = ParsevalRetraction(method["parseval"]["beta"]) if method["parseval"] else None
    record = {"method": name, "objective": method["objective"], "kwargs": method["kwargs"], "layers": method["layers"],
              "parseval": method["parseval"], "model": spec["model"]}
    return RunPlan(objective, TrainConfig.from_dict({**method["train"], "seed": seed}), after_step=after, record=record)


def validation_errors(spec: dict[str, Any], objective, test) -> dict[str, float]:
    """Clean, FGSM (the spec's SNR budget) and PGD errors of the trained ``objective`` on ``test``
    (a ``TensorDataset``: the validation split of ``--tune``), the batches on the model's device."""
    model = objective.model.eval()
    device = next(model.parameters()).device
    att = spec["attacks"]
    x, y = test.tensors
    gen = torch.Generator().manual_seed(12345)

    def err(make: Callable[[Tensor, Tensor], Tensor] | None) -> float:
        wrong = 0
        for i in range(0, len(y), att["batch_size"]):
            xb, yb = x[i:i + att["batch_size"]].to(device), y[i:i + att["batch_size"]].to(device)
            xa = xb if make is None else make(xb, yb)
            with torch.no_grad():
                wrong += int((model(xa).argmax(1) != yb).sum())
        return wrong / len(y)

    return {"clean": err(None), "fgsm": err(lambda xb, yb: fgsm(model, xb, yb, snr_db=att["fgsm_snr_db"])),
            "pgd": err(lambda xb, yb: pgd(model, xb, yb, att["pgd_eps"], att["pgd_alpha"], att["pgd_steps"], generator=gen))}


def evaluate_run(spec, ctx, run_dir: Path, objective, splits, x_att, y_att, x_cor, y_cor) -> dict[str, Any]:
    path = run_dir / "eval.json"
    if path.exists() and read_json(path).get("storage") == STORAGE_VERSION:  # else made on other corrupted sets
        return read_json(path)
    device = next(objective.parameters()).device
    objective.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", map_location=device)["objective"])
    model = objective.model.eval()

    def predict(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model(x.to(device)).argmax(dim=1).cpu()

    att, bs = spec["attacks"], spec["attacks"]["batch_size"]
    x_te, y_te = splits.test.tensors[0], splits.test.tensors[1]
    out: dict[str, Any] = {"clean": _error_of(predict, x_te, y_te), "seconds_per_epoch": seconds_per_epoch(run_dir),
                           "storage": STORAGE_VERSION}

    def attacked(make: Callable[[Tensor, Tensor], Tensor]) -> float:
        wrong = 0
        for i in range(0, len(y_att), bs):
            xb, yb = x_att[i:i + bs].to(device), y_att[i:i + bs].to(device)
            wrong += int((predict(make(xb, yb)) != y_att[i:i + bs]).sum())
        return wrong / len(y_att)

    out["fgsm_snr"] = attacked(lambda xb, yb: fgsm(model, xb, yb, snr_db=att["fgsm_snr_db"]))
    out["fgsm_eps"] = {str(e): attacked(lambda xb, yb, e=e: fgsm(model, xb, yb, eps=e)) for e in att["fgsm_eps"]}
    gen = torch.Generator().manual_seed(12345)
    out["pgd"] = attacked(lambda xb, yb: pgd(model, xb, yb, att["pgd_eps"], att["pgd_alpha"], att["pgd_steps"], generator=gen))
    cor = spec["corruptions"]
    out["clean_cor"] = _error_of(predict, x_cor, y_cor)
    out["corruptions"] = {}
    for name, severity, xc in corrupted_sets(x_cor, cor["names"], cor["severities"], cor["seed"], ctx.runs_dir / "corrupted"):
        out["corruptions"].setdefault(name, []).append(_error_of(predict, xc, y_cor))
    write_json(path, out)
    return out


def error_keys(spec) -> list[str]:
    """The per-run error metrics: clean, FGSM (SNR budget, then each eps), PGD, mCE."""
    return ["clean", "fgsm_snr"] + [f"fgsm_{e}" for e in map(str, spec["attacks"]["fgsm_eps"])] + ["pgd", "mce"]


def paired_comparisons(spec, per_run) -> list[dict[str, Any]]:
    """Every error of each method minus the baseline's of the same seed, then the spec's extra
    ``comparisons`` (``paired_rows``)."""
    pairs = [(m, spec["baseline"]) for m in spec["methods"]] + spec["comparisons"]
    return paired_rows(per_run, error_keys(spec), pairs)


def table_rows(spec, results) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    base, seeds = spec["baseline"], spec["seeds"]
    per_run, rows = [], []
    for (name, seed), r in results.items():
        b = results[(base, seed)]
        m, rel, dropped = mce_pair(r["corruptions"], r["clean_cor"], b["corruptions"], b["clean_cor"])
        line = {"method": name, "seed": seed, "clean": r["clean"], "fgsm_snr": r["fgsm_snr"], "pgd": r["pgd"],
                "mce": m, "rel_mce": rel, "rel_dropped": dropped, "seconds_per_epoch": r["seconds_per_epoch"],
                "time_ratio": r["seconds_per_epoch"] / b["seconds_per_epoch"]}
        for e, v in r["fgsm_eps"].items():
            line[f"fgsm_{e}"] = v
        per_run.append(line)
    keys = error_keys(spec) + ["rel_mce", "seconds_per_epoch", "time_ratio"]
    for name, method in spec["methods"].items():
        row: dict[str, Any] = {"method": name, "label": method["label"], "n": len(seeds)}
        for k in keys:
            row[k], row[f"{k}_std"], _ = median_std(line[k] for line in per_run if line["method"] == name)
        rows.append(row)
    paired = {(d["method"], d["metric"]): d for d in paired_comparisons(spec, per_run) if d["reference"] == base}
    for row in rows:
        for k in ("clean", "pgd"):
            d = paired.get((row["method"], k))
            row[f"paired_{k}"] = paired_text(d)
            row.update({f"paired_{k}_{q}": d[q] if d else None for q in ("mean", "lo", "hi", "p")})
    return rows, per_run


def write_tables(spec, ctx, rows, per_run) -> list[Path]:
    att = spec["attacks"]
    pm = lambda k, t, fmt=".2f", scale=100.0: [Column(k, t, fmt, scale), Column(f"{k}_std", "±", fmt, scale)]  # noqa: E731
    cols = [Column("label", "Method")] + pm("clean", "Clean error (%)")
    cols += pm("fgsm_snr", f"FGSM {att['fgsm_snr_db']:g} dB (%)")
    for e in att["fgsm_eps"]:
        cols += pm(f"fgsm_{e}", f"FGSM eps={e:.3g} (%)")
    cols += pm("pgd", f"PGD-{att['pgd_steps']} eps={att['pgd_eps']:.3g} (%)")
    cols += pm("mce", "mCE", ".1f", 1.0) + pm("rel_mce", "Relative mCE", ".1f", 1.0)
    cols += [Column("seconds_per_epoch", "s / epoch", ".2f"), Column("time_ratio", "Time / epoch (x baseline)", ".2f")]
    cols += [Column("paired_clean", "Paired clean error difference (points) [95% CI]"),
             Column("paired_pgd", "Paired PGD error difference (points) [95% CI] (negative = fewer errors)")]
    dropped = sorted({c for line in per_run for c in line["rel_dropped"]})
    cor = spec["corruptions"]
    n_seeds = len(spec["seeds"])
    notes = (
        f"Median ± std over {n_seeds} seeds ({spec['data']['name']}, {spec['model']['model']} "
        f"{spec['model']['kwargs']}). Errors in %; FGSM with the authors' per-image budget from a "
        f"{att['fgsm_snr_db']:g} dB SNR and with fixed L-inf budgets, PGD with a random start "
        f"(alpha {att['pgd_alpha']:.3g}), both on {att['samples']} class-balanced test images. mCE and relative mCE "
        f"(Hendrycks & Dietterich) against `{spec['baseline']}` of the same seed over {len(cor['names'])} corruptions x "
        f"severities {cor['severities']} on {cor['samples'] or 'all'} test images (corrupted sets stored in 8 bits "
        f"like CIFAR-10-C). Time per epoch: median training seconds of an epoch, divided by the baseline's of the "
        f"same seed, measured in this run. ")
    if dropped:
        notes += ("Left out of the relative mCE where they do not raise the baseline's error (undefined ratio): "
                  + ", ".join(f"`{c}`" for c in dropped) + ". ")
    notes += corruption_notes(cor["names"])
    notes += (" Paired differences: the method's error minus the baseline's of the same seed, mean over seeds with its "
              "95% Student-t interval (negative = fewer errors); paired.md gives every attack and the mCE with p-values "
              "and readings.")
    md, csv = ctx.results_dir / "table.md", ctx.results_dir / "table.csv"
    keys = (["method", "label", "n"] + [c.key for c in cols[1:] if not c.key.startswith("paired_")]
            + [f"paired_{k}_{q}" for k in ("clean", "pgd") for q in ("mean", "lo", "hi", "p")])
    write_table(rows, cols, md, csv, title=f"Robustness ({ctx.profile} profile)", notes=notes, csv_keys=keys)
    titles = {c.key: c.title.replace(" (%)", "") for c in cols}
    metric_fmt = {k: (titles[k] + ("" if k == "mce" else " (points)"), 1.0 if k == "mce" else 100.0, ".1f" if k == "mce" else ".2f")
                  for k in error_keys(spec)}
    paired_md, paired_csv = ctx.results_dir / "paired.md", ctx.results_dir / "paired.csv"
    write_paired_table(paired_comparisons(spec, per_run), {m: spec["methods"][m]["label"] for m in spec["methods"]},
                       metric_fmt, paired_md, paired_csv,
                       title=f"Each method vs the baseline and the spec's comparisons, paired by seed ({ctx.profile} profile)")
    runs_csv = ctx.results_dir / "runs.csv"
    run_keys = sorted({k for line in per_run for k in line} - {"rel_dropped"}, key=lambda k: (k not in ("method", "seed"), k))
    atomic_write_text(runs_csv, csv_text(per_run, run_keys))
    return [md, csv, paired_md, paired_csv, runs_csv]
