"""Running a ``distill`` study: teachers, then students (in worker processes when ``workers > 1``), their
evaluation, the layer-wise analyses and the tables."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...analysis import decision_consistency, layer_label_variation
from ...capture import LatentCapture
from ...data import balanced_order
from ...engine import TrainConfig, predict, resolve_device, train
from ...objectives import Supervised
from ...io import atomic_write_text
from ...engine.run_folder import load_trained_model
from ...models import build_model
from ..common import load_splits
from ..processes import run_in_processes
from ..runner import RunPlan, StudyContext
from ..tables import Column, csv_text, median_std, paired_rows, paired_text, write_paired_table, write_table
from .figures import figures
from .spec import make_objective

__all__ = ["run", "build_run"]


def _num_params(model: nn.Module) -> int:
    """All parameters of a network (a frozen teacher's too, unlike ``count_parameters``)."""
    return sum(p.numel() for p in model.parameters())


def _run_name(role: str, seed: int, method: str | None) -> str:
    return f"teacher_s{seed}" if role == "teacher" else f"{method}_s{seed}"


def _teacher_seed(spec: dict[str, Any], seed: int) -> int:
    return seed if spec["teacher"]["per_seed"] else spec["teacher"]["seed"]


def _load_network(spec: dict[str, Any], runs_dir: str | Path, role: str, seed: int, method: str | None) -> nn.Module:
    """A trained network rebuilt from its run's checkpoint, on CPU in eval mode."""
    entry = spec[role]
    model = build_model(entry["model"], **entry["kwargs"])
    load_trained_model(Path(runs_dir) / _run_name(role, seed, method), model)
    return model.eval()


def _run_job(spec, study, profile, runs_dir, data_dir, role, seed, method, splits=None, progress=False):
    """Train (or skip, or resume) one run: the teacher of ``seed`` or the student of ``method`` and ``seed``.

    Module-level so that worker processes can run it; loads the data (when ``splits`` is None) and the
    teacher from its checkpoint. Every student of a seed starts from the same initialization
    (``torch.manual_seed(seed)`` right before building it). Returns ``(run name, state, final metrics)``.
    """
    if splits is None:
        splits = load_splits(spec["data"], data_dir)
    run = _run_name(role, seed, method)
    run_dir = Path(runs_dir) / run
    if role == "student":
        plan = build_run(spec, method, seed, splits, runs_dir)
    else:
        entry = spec["teacher"]
        torch.manual_seed(seed)
        plan = RunPlan(Supervised(build_model(entry["model"], **entry["kwargs"])), TrainConfig.from_dict({**entry["train"], "seed": seed}),
                       record={"model": entry["model"], "kwargs": entry["kwargs"], "role": role})
    objective, config, record = plan.objective, plan.config, {"study": study, "profile": profile, **plan.record}
    state = "done" if (run_dir / "final.json").exists() else ("resuming" if (run_dir / "checkpoint.pt").exists() else "training")
    final = train(objective, splits, config, run_dir, progress=progress, record=record)
    return run, state, final


def build_run(spec: dict[str, Any], method: str, seed: int, splits, runs_dir: str | Path | None = None) -> RunPlan:
    """The student of ``method`` and ``seed`` (``torch.manual_seed(seed)`` right before building it: every
    student of a seed starts from the same initialization), distilled from the trained teacher of its seed
    in ``runs_dir``, or, with ``runs_dir=None``, from an untrained teacher of the spec (throughput checks)."""
    m, entry, ts = spec["methods"][method], spec["student"], _teacher_seed(spec, seed)
    if runs_dir is None:
        torch.manual_seed(ts)
        teacher = build_model(spec["teacher"]["model"], **spec["teacher"]["kwargs"]).eval()
    else:
        teacher = _load_network(spec, runs_dir, "teacher", ts, None)
    record = {"model": entry["model"], "kwargs": entry["kwargs"], "role": "student", "method": method, "terms": m["terms"],
              "pairs": m["pairs"], "task_weight": m["task_weight"], "teacher_run": f"teacher_s{ts}"}
    torch.manual_seed(seed)
    model = build_model(entry["model"], **entry["kwargs"])
    objective = make_objective(m, model, teacher, splits.train.tensors[0][:4])
    return RunPlan(objective, TrainConfig.from_dict({**entry["train"], "seed": seed}), record=record)


def run(spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
    splits = load_splits(spec["data"], ctx.data_dir)
    seeds = spec["seeds"]
    teacher_seeds = seeds if spec["teacher"]["per_seed"] else [spec["teacher"]["seed"]]
    teacher_jobs = [("teacher", seed, None) for seed in teacher_seeds]
    student_jobs = [("student", seed, name) for seed in seeds for name in spec["methods"]]
    ctx.log(f"[{ctx.name}/{ctx.profile}] {splits!r}; {len(teacher_jobs) + len(student_jobs)} runs under "
            f"{ctx.runs_dir} ({ctx.workers} worker{'s' if ctx.workers > 1 else ''})")
    finals: dict[str, dict[str, Any]] = {}
    # teachers first (students need them), then every student; each phase may run in parallel
    for jobs in (teacher_jobs, student_jobs):
        finished = [j for j in jobs if (ctx.runs_dir / _run_name(*j) / "final.json").exists()]
        pending = [j for j in jobs if j not in finished]
        parallel = ctx.workers > 1 and len(pending) > 1
        for group, in_workers in ((finished, False), (pending, parallel)):
            args = [(spec, ctx.name, ctx.profile, str(ctx.runs_dir), ctx.data_dir, role, seed, method,
                     None if in_workers else splits, ctx.progress and not in_workers) for role, seed, method in group]
            for job, (run, state, final) in run_in_processes(_run_job, args, ctx.workers if in_workers else 1, ctx.threads):
                finals[run] = final
                ctx.log(f"  {run:<18} {state:<8} test error {100 * final['test_error']:5.2f}%  ({final['seconds']:.1f} s)")

    ctx.log(f"[{ctx.name}/{ctx.profile}] evaluating and analyzing")
    # evaluation and analyses on the training device (a GPU for the paper profile); results on CPU
    device = resolve_device(spec["student"]["train"]["device"])
    teachers = {seed: _load_network(spec, ctx.runs_dir, "teacher", seed, None).to(device) for seed in teacher_seeds}
    students = {(name, seed): _load_network(spec, ctx.runs_dir, "student", seed, name).to(device)
                for _, seed, name in student_jobs}
    per_run = evaluate_runs(spec, splits, teachers, students, finals)
    analysis = analyze(spec, splits, teachers, students)
    rows = table_rows(spec, per_run, teachers, students)
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    paths = write_tables(spec, ctx, rows, per_run, analysis)
    paths += figures(spec, ctx, per_run, analysis)
    return {"rows": rows, "runs": per_run, "paths": [str(p) for p in paths]}


def evaluate_runs(spec, splits, teachers, students, finals) -> list[dict[str, Any]]:
    """Per run: test error and agreement with its teacher's predicted classes on the whole test set."""
    y = splits.test.tensors[1]
    batch = spec["student"]["train"]["eval_batch_size"]
    t_pred = {s: predict(t, splits.test, batch) for s, t in teachers.items()}
    t_params = {s: _num_params(t) for s, t in teachers.items()}
    rows = []
    for s, t in teachers.items():
        rows.append({"run": f"teacher_s{s}", "method": "teacher", "seed": s, "test_error": float((t_pred[s] != y).double().mean()),
                     "agreement": 1.0, "params": t_params[s], "seconds": finals[f"teacher_s{s}"]["seconds"]})
    for (name, seed), model in students.items():
        ts = _teacher_seed(spec, seed)
        pred = predict(model, splits.test, batch)
        rows.append({"run": f"{name}_s{seed}", "method": name, "seed": seed, "test_error": float((pred != y).double().mean()),
                     "agreement": float((pred == t_pred[ts]).double().mean()), "params": _num_params(model),
                     "seconds": finals[f"{name}_s{seed}"]["seconds"]})
    return rows


def analysis_subset(spec, splits):
    """A fixed class-balanced subset of the test set for the layer-wise analyses."""
    x, y = splits.test.tensors
    n = min(spec["analysis"]["samples"], len(y))
    idx = np.sort(balanced_order(y.numpy(), np.random.default_rng(0))[:n])
    return x[idx], y[idx]


def features_and_predictions(model: nn.Module, layers: list[str], x: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    """Outputs (flattened, (N, d)) of ``layers`` plus the predicted class under key ``"__pred__"``."""
    layers = list(dict.fromkeys(layers))
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers + ["__pred__"]}
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad(), LatentCapture(model, layers, detach=True) as out:
        for start in range(0, len(x), batch):
            logits = model(x[start:start + batch].to(device))
            for name in layers:
                parts[name].append(out[name].flatten(1).cpu())
            parts["__pred__"].append(logits.argmax(1).cpu())
    return {name: torch.cat(v) for name, v in parts.items()}


def analyze(spec, splits, teachers, students) -> list[dict[str, Any]]:
    """Long-form records of analyses (a) consistency with the teacher per block and at the output,
    (b) normalized label variation of each block's k-NN LGG."""
    a = spec["analysis"]
    x, y = analysis_subset(spec, splits)
    t_layers = [t for t, _ in a["blocks"]]
    s_layers = [s for _, s in a["blocks"]]
    t_feats = {s: features_and_predictions(t, t_layers, x, a["batch_size"]) for s, t in teachers.items()}
    records = []
    for s, feats in t_feats.items():
        lv = layer_label_variation({t: feats[t] for t in t_layers}, y, k=a["k"])
        records += [{"analysis": "label_variation", "method": "teacher", "seed": s, "block": i + 1, "layer": t, "value": lv[t]}
                    for i, t in enumerate(t_layers)]
    wanted = set(a["consistency"]) | set(a["variation"])
    for (name, seed), model in students.items():
        if name not in wanted:
            continue
        ts = _teacher_seed(spec, seed)
        feats = features_and_predictions(model, s_layers, x, a["batch_size"])
        if name in a["consistency"]:
            cons = decision_consistency(feats, t_feats[ts], [(s_, t_) for t_, s_ in a["blocks"]], y, k=a["k"])
            records += [{"analysis": "consistency", "method": name, "seed": seed, "block": i + 1, "layer": s_,
                         "value": cons[(s_, t_)]} for i, (t_, s_) in enumerate(a["blocks"])]
            records.append({"analysis": "consistency", "method": name, "seed": seed, "block": len(a["blocks"]) + 1,
                            "layer": "output", "value": float((feats["__pred__"] == t_feats[ts]["__pred__"]).double().mean())})
        if name in a["variation"]:
            lv = layer_label_variation({s_: feats[s_] for s_ in s_layers}, y, k=a["k"])
            records += [{"analysis": "label_variation", "method": name, "seed": seed, "block": i + 1, "layer": s_,
                         "value": lv[s_]} for i, s_ in enumerate(s_layers)]
    return records


def paired_comparisons(spec, per_run) -> list[dict[str, Any]]:
    """Each student's test error minus the baseline student's of the same seed, then the spec's extra
    ``comparisons`` (``paired_rows``)."""
    students = [r for r in per_run if r["method"] != "teacher"]
    pairs = [(m, spec["baseline"]) for m in spec["methods"]] + spec["comparisons"]
    return paired_rows(students, ["test_error"], pairs)


def table_rows(spec, per_run, teachers, students) -> list[dict[str, Any]]:
    by_method: dict[str, list[dict]] = {}
    for r in per_run:
        by_method.setdefault(r["method"], []).append(r)
    t_params = np.median([r["params"] for r in by_method["teacher"]])
    base_median = median_std(r["test_error"] for r in by_method[spec["baseline"]])[0]
    paired = {d["method"]: d for d in paired_comparisons(spec, per_run) if d["reference"] == spec["baseline"]}
    rows = []
    for method in ["teacher", *spec["methods"]]:
        runs = by_method[method]
        med, std, n = median_std(r["test_error"] for r in runs)
        agree = median_std(r["agreement"] for r in runs)[0] if method != "teacher" else None
        rows.append({
            "method": method,
            "label": "Teacher" if method == "teacher" else spec["methods"][method]["label"],
            "test_error_median": med,
            "test_error_std": std,
            "gain_vs_baseline": None if method == "teacher" else base_median - med,
            "paired_vs_baseline": paired_text(paired.get(method)),
            **{f"paired_{k}": paired[method][k] if method in paired else None for k in ("mean", "lo", "hi", "p")},
            "params": int(np.median([r["params"] for r in runs])),
            "relative_size": float(np.median([r["params"] for r in runs]) / t_params),
            "agreement_median": agree,
            "seeds": n,
        })
    return rows


def write_tables(spec, ctx, rows, per_run, analysis) -> list[Path]:
    cols = [Column("label", "Method"), Column("test_error_median", "Test error (%) median", ".2f", 100),
            Column("test_error_std", "std", ".2f", 100),
            Column("paired_vs_baseline", "Paired error difference vs baseline (points) [95% CI] (negative = fewer errors)"),
            Column("params", "Params"), Column("relative_size", "Relative size", ".3f"),
            Column("agreement_median", "Agreement with teacher (%)", ".1f", 100), Column("seeds", "Seeds")]
    t, s, d = spec["teacher"], spec["student"], spec["data"]
    teacher_runs = "one teacher per seed" if t["per_seed"] else f"one teacher (seed {t['seed']})"
    notes = (
        f"Profile `{spec['profile']}`: data `{d['name']}`{' ' + str(d['options']) if d['options'] else ''}; teacher `{t['model']}` {t['kwargs']} "
        f"({t['train']['epochs']} epochs, {teacher_runs}); student `{s['model']}` {s['kwargs']} ({s['train']['epochs']} epochs); "
        f"seeds {spec['seeds']}.\n\n"
        "Test error: median and sample std (ddof=1) over seeds (table.csv adds gain_vs_baseline: baseline median minus "
        "method median). Relative size: student parameters / "
        "teacher parameters (FitNet's projection is discarded after training and not counted). Agreement: "
        "fraction of test samples on which the student's predicted class equals its teacher's (median over seeds). "
        "Paired error difference: the method's test error minus the baseline student's on the same seed, mean over "
        "seeds with its 95% Student-t interval (negative = fewer errors; results/NAME/paired.md: p-values and "
        "readings)."
    )
    md, csv = ctx.results_dir / "table.md", ctx.results_dir / "table.csv"
    write_table(rows, cols, md, csv, title=f"{spec['name']}: knowledge distillation ({spec['profile']} profile)", notes=notes,
                csv_keys=["method", "label", "test_error_median", "test_error_std", "gain_vs_baseline", "paired_mean",
                          "paired_lo", "paired_hi", "paired_p", "params",
                          "relative_size", "agreement_median", "seeds"])
    labels = {m: spec["methods"][m]["label"] for m in spec["methods"]}
    paired_md, paired_csv = ctx.results_dir / "paired.md", ctx.results_dir / "paired.csv"
    write_paired_table(paired_comparisons(spec, per_run), labels, {"test_error": ("Test error (points)", 100.0, ".2f")}, paired_md, paired_csv,
                       title=f"{spec['name']}: each student vs the baseline student and the spec's comparisons, paired by seed "
                             f"({spec['profile']} profile)")
    runs_csv, analysis_csv = ctx.results_dir / "runs.csv", ctx.results_dir / "analysis.csv"
    atomic_write_text(runs_csv, csv_text(per_run, ["run", "method", "seed", "test_error", "agreement", "params", "seconds"]))
    atomic_write_text(analysis_csv, csv_text(analysis, ["analysis", "method", "seed", "block", "layer", "value"]))
    return [md, csv, paired_md, paired_csv, runs_csv, analysis_csv]
