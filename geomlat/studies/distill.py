"""Study kind ``distill``: a teacher, students trained with each distillation method over seeds, the
comparison table and the layer-wise analyses of the GKD talk (``shared/papers/003``, LGG paper 4.1).

Spec fields (see ``studies/gkd.toml`` for a commented example):

- ``data``: ``name`` (a ``geomlat.data`` data set), ``seed`` (the train/test split, shared by every
  run; default 0), ``options`` (passed to ``load_dataset``).
- ``train``: defaults of :class:`geomlat.engine.TrainConfig` for both networks (not ``seed``: each run
  takes its seed from ``seeds``); ``teacher.train`` / ``student.train`` override them field by field.
- ``teacher``: ``model``, ``kwargs``, ``train``, and either ``seed`` (one teacher, default the first
  seed) or ``per_seed = true`` (one teacher per seed, each student distilled from its seed's teacher).
- ``student``: ``model``, ``kwargs``, ``train``. Every student of seed ``s`` starts from the same
  initialization (``torch.manual_seed(s)`` before building it), so methods are compared paired.
- ``pairs``: default ``[[teacher_layer, student_layer], ...]`` for feature-based terms.
- ``baseline``: name of the method without distillation terms (default ``"baseline"``), the reference
  of the "gain" column.
- ``methods.NAME``: ``label``, ``task_weight`` (cross-entropy weight, default 1), ``pairs`` (overrides the
  default), ``terms.TERM`` = ``{loss, weight, kwargs}`` with ``loss`` one of :func:`distill_losses`
  (the registry :data:`geomlat.losses.LOSSES`). FitNet's projection widths are inferred from the models.
- ``analysis``: ``samples`` (test samples used, default 1000), ``k`` (LGG neighbours, default 10),
  ``blocks`` (teacher/student layer pairs compared, default ``pairs``), ``consistency``, ``variation``,
  ``graph_variants``: method names shown in figures (a), (b), (c).

Validation builds the models and runs every method's objective on a dummy batch, so wrong layer names,
shape mismatches or bad loss options are reported (``SpecError`` with the field path) before training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import nn

from ..analysis import decision_consistency, layer_label_variation
from ..capture import LatentCapture
from ..data import balanced_order, load_dataset
from ..engine import Supervised, TrainConfig, predict, resolve_device, train
from ..engine.io import atomic_write_text
from ..engine.train import load_trained_model
from ..losses import LOSSES, Distiller, build_loss
from ..losses.registry import DISTILL_CONSUMES
from ..models import MODELS, build_model
from .common import data_fields, train_config_from_fields
from .figures import PALETTE, new_figure, save_figure, series_styles
from .runner import StudyContext, StudyKind, register_study_kind, run_in_processes
from .spec import Fields, SpecError
from .tables import Column, csv_text, median_std, write_table

__all__ = ["DistillStudy", "distill_losses", "train_config_from_fields"]


def distill_losses() -> dict[str, type[nn.Module]]:
    """Loss names usable in `terms.*.loss`: the registered losses a Distiller takes (``consumes``)."""
    return {name: cls for name, cls in LOSSES.items() if cls.consumes in DISTILL_CONSUMES}

# sample shapes of the built-in data sets, for the dry-run forward pass of the validation
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist1d": (1, 40), "cifar10": (3, 32, 32)}

def _num_params(model: nn.Module) -> int:
    """All parameters of a network (a frozen teacher's too, unlike ``count_parameters``)."""
    return sum(p.numel() for p in model.parameters())


def _model_fields(f: Fields, path: str) -> dict[str, Any]:
    model = f.str("model")
    if model not in MODELS:
        raise SpecError(f.sub("model"), f"unknown model {model!r}; registered models: {sorted(MODELS)}")
    return {"model": model, "kwargs": f.table_("kwargs", {})}


def _build(entry: dict[str, Any], path: str) -> nn.Module:
    try:
        return build_model(entry["model"], **entry["kwargs"])
    except (TypeError, ValueError) as err:
        raise SpecError(f"{path}.kwargs", str(err)) from err


def _pairs(f: Fields, key: str, default=None) -> list[tuple[str, str]]:
    value = f.list(key, default)
    out = []
    for i, p in enumerate(value):
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p)):
            raise SpecError(f"{f.sub(key)}[{i}]", f"expected [teacher_layer, student_layer], got {p!r}")
        out.append((p[0], p[1]))
    return out


def _check_layers(pairs, teacher: nn.Module, student: nn.Module, path: str) -> None:
    for i, (t, s) in enumerate(pairs):
        for j, (name, model, who) in enumerate(((t, teacher, "teacher"), (s, student, "student"))):
            modules = dict(model.named_modules())
            if name not in modules:
                stages = getattr(model, "stage_names", [])
                raise SpecError(
                    f"{path}[{i}][{j}]",
                    f"layer {name!r} is not a module of the {who} ({type(model).__name__}); stage names: "
                    f"{stages}, features: {getattr(model, 'feature_name', None)!r}",
                )


def make_objective(method: dict[str, Any], student: nn.Module, teacher: nn.Module, x_example: torch.Tensor) -> nn.Module:
    """The training objective of a method: :class:`Supervised` without terms, else a :class:`Distiller`.

    ``x_example`` (a small batch of inputs) is used to infer FitNet projection widths."""
    if not method["terms"]:
        return Supervised(student)
    terms = {}
    for name, term in method["terms"].items():
        module = build_loss(term["loss"], teacher=teacher, student=student, pairs=method["pairs"], example=x_example,
                            **term["kwargs"])
        terms[name] = (module, term["weight"])
    return Distiller(student, teacher, terms, pairs=method["pairs"], task_weight=method["task_weight"])


def _run_name(role: str, seed: int, method: str | None) -> str:
    return f"teacher_s{seed}" if role == "teacher" else f"{method}_s{seed}"


def _teacher_seed(spec: dict[str, Any], seed: int) -> int:
    return seed if spec["teacher"]["per_seed"] else spec["teacher"]["seed"]


def _load_splits(data: dict[str, Any], data_dir: str | None):
    try:
        return load_dataset(data["name"], data_dir, seed=data["seed"], **data["options"])
    except TypeError as err:
        raise SpecError("data.options", str(err)) from err


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
        splits = _load_splits(spec["data"], data_dir)
    run = _run_name(role, seed, method)
    run_dir = Path(runs_dir) / run
    entry = spec[role]
    record = {"study": study, "profile": profile, "model": entry["model"], "kwargs": entry["kwargs"], "role": role}
    teacher = None
    if role == "student":
        m = spec["methods"][method]
        ts = _teacher_seed(spec, seed)
        teacher = _load_network(spec, runs_dir, "teacher", ts, None)
        record.update(method=method, terms=m["terms"], pairs=m["pairs"], task_weight=m["task_weight"], teacher_run=f"teacher_s{ts}")
    torch.manual_seed(seed)
    model = build_model(entry["model"], **entry["kwargs"])
    if teacher is None:
        objective = Supervised(model)
    else:
        objective = make_objective(spec["methods"][method], model, teacher, splits.train.tensors[0][:4])
    config = TrainConfig.from_dict({**entry["train"], "seed": seed})
    state = "done" if (run_dir / "final.json").exists() else ("resuming" if (run_dir / "checkpoint.pt").exists() else "training")
    final = train(objective, splits, config, run_dir, progress=progress, record=record)
    return run, state, final


@register_study_kind("distill")
class DistillStudy(StudyKind):
    """Knowledge-distillation study (see the module docstring for the spec)."""

    # ------------------------------------------------------------------ validation
    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        seeds = spec["seeds"]
        data = data_fields(fields)

        common_train = fields.table_("train", {})
        teacher_f, student_f = fields.fields("teacher"), fields.fields("student")
        teacher = _model_fields(teacher_f, "teacher")
        student = _model_fields(student_f, "student")
        teacher["per_seed"] = teacher_f.bool("per_seed", False)
        if teacher["per_seed"] and teacher_f.has("seed"):
            raise SpecError("teacher.seed", "per_seed = true trains one teacher per seed; remove `seed`")
        teacher["seed"] = None if teacher["per_seed"] else teacher_f.int("seed", seeds[0], minimum=0)
        for entry, f, path in ((teacher, teacher_f, "teacher"), (student, student_f, "student")):
            own = f.table_("train", {})
            # the paths name the table where the bad field was written
            train_config_from_fields(common_train, "train")
            train_config_from_fields(own, f"{path}.train")
            entry["train"] = train_config_from_fields({**common_train, **own}, f"{path}.train").to_dict()
            f.finish()
        t_model, s_model = _build(teacher, "teacher"), _build(student, "student")

        pairs = _pairs(fields, "pairs", [])
        _check_layers(pairs, t_model, s_model, "pairs")

        methods_f = fields.fields("methods")
        if not methods_f.table:
            raise SpecError("methods", "declare at least one method")
        methods = {}
        for name in methods_f.table:
            mf = methods_f.fields(name)
            method = {"label": mf.str("label", name), "task_weight": mf.number("task_weight", 1.0, minimum=0.0)}
            method["pairs"] = _pairs(mf, "pairs", [list(p) for p in pairs])
            terms_f = mf.fields("terms", {})
            method["terms"] = {}
            losses = distill_losses()
            for term_name in terms_f.table:
                tf = terms_f.fields(term_name)
                term = {"loss": tf.str("loss", choices=losses), "weight": tf.number("weight", minimum=0.0),
                        "kwargs": tf.table_("kwargs", {})}
                if term_name == "task":
                    raise SpecError(tf.path, "the term name 'task' is reserved for the cross-entropy loss")
                from_models = hasattr(losses[term["loss"]], "from_models")
                if from_models and set(term["kwargs"]) - {"global_batch"}:
                    raise SpecError(tf.sub("kwargs"), "FitNet's projection widths are inferred from the models: no kwargs but global_batch")
                if not from_models:
                    try:
                        build_loss(term["loss"], **term["kwargs"])
                    except (TypeError, ValueError) as err:
                        raise SpecError(tf.sub("kwargs"), str(err)) from err
                tf.finish()
                method["terms"][term_name] = term
            mf.finish()
            if not any(losses[t["loss"]].consumes != "logits" for t in method["terms"].values()):
                method["pairs"] = []  # cross-entropy / logit terms only: no features to capture
            else:
                if not method["pairs"]:
                    raise SpecError(mf.sub("pairs"), "feature-based terms need layer pairs (here or top-level `pairs`)")
                _check_layers(method["pairs"], t_model, s_model, mf.sub("pairs"))
            methods[name] = method

        baseline = fields.str("baseline", "baseline")
        if baseline not in methods:
            raise SpecError("baseline", f"method {baseline!r} is not declared in `methods` ({sorted(methods)})")
        if methods[baseline]["terms"]:
            raise SpecError(f"methods.{baseline}.terms", "the baseline method must have no distillation terms")

        af = fields.fields("analysis", {})
        analysis = {"samples": af.int("samples", 1000, minimum=10), "k": af.int("k", 10, minimum=1),
                    "batch_size": af.int("batch_size", 256, minimum=1)}
        analysis["blocks"] = _pairs(af, "blocks", [list(p) for p in pairs])
        if not analysis["blocks"]:
            raise SpecError(af.sub("blocks"), "no blocks to analyse: set `analysis.blocks` or top-level `pairs`")
        _check_layers(analysis["blocks"], t_model, s_model, af.sub("blocks"))
        if analysis["k"] >= analysis["samples"]:
            raise SpecError(af.sub("k"), f"k={analysis['k']} must be smaller than analysis.samples={analysis['samples']}")
        for key in ("consistency", "variation", "graph_variants"):
            names = af.list(key, [m for m in self._default_methods(key) if m in methods], item=str)
            for i, m in enumerate(names):
                if m not in methods:
                    raise SpecError(f"{af.sub(key)}[{i}]", f"unknown method {m!r}; declared methods: {sorted(methods)}")
            analysis[key] = names
        af.finish()

        out = {"data": data, "teacher": teacher, "student": student, "pairs": pairs, "methods": methods,
               "baseline": baseline, "analysis": analysis}
        self._dry_run(out, t_model, s_model)
        return out

    @staticmethod
    def _default_methods(key: str) -> list[str]:
        return {"consistency": ["baseline", "rkd_d", "gkd"], "variation": ["baseline", "rkd_d", "gkd"],
                "graph_variants": ["gkd", "gkd_inter", "gkd_intra"]}[key]

    @staticmethod
    def _dry_run(spec: dict[str, Any], teacher: nn.Module, student: nn.Module) -> None:
        """Each method's objective on a dummy batch of 4: catches shape mismatches before training."""
        shape = INPUT_SHAPES.get(spec["data"]["name"])
        if shape is None:
            return
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((4, *shape), generator=gen)
        num_classes = int(spec["student"]["kwargs"].get("num_classes", 10))
        y = torch.arange(4) % min(num_classes, 2)
        for name, method in spec["methods"].items():
            try:
                objective = make_objective(method, student, teacher, x)
                objective.train()
                with torch.no_grad():
                    out, losses = objective(x, y)
            except (KeyError, ValueError, TypeError, RuntimeError) as err:
                raise SpecError(f"methods.{name}", f"the objective fails on a dummy batch: {err}") from err
            if out.dim() != 2:
                raise SpecError("student.kwargs", f"the student must output class scores (B, C), got {tuple(out.shape)}")

    # ------------------------------------------------------------------ running
    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        splits = _load_splits(spec["data"], ctx.data_dir)
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

        ctx.log(f"[{ctx.name}/{ctx.profile}] evaluating and analysing")
        # evaluation and analyses on the training device (a GPU for the paper profile); results on CPU
        device = resolve_device(spec["student"]["train"]["device"])
        teachers = {seed: _load_network(spec, ctx.runs_dir, "teacher", seed, None).to(device) for seed in teacher_seeds}
        students = {(name, seed): _load_network(spec, ctx.runs_dir, "student", seed, name).to(device)
                    for _, seed, name in student_jobs}
        per_run = self._evaluate(spec, splits, teachers, students, finals)
        analysis = self._analyse(spec, splits, teachers, students)
        rows = self._table_rows(spec, per_run, teachers, students)
        ctx.results_dir.mkdir(parents=True, exist_ok=True)
        paths = self._write_tables(spec, ctx, rows, per_run, analysis)
        paths += self._figures(spec, ctx, per_run, analysis)
        return {"rows": rows, "runs": per_run, "paths": [str(p) for p in paths]}

    @staticmethod
    def _evaluate(spec, splits, teachers, students, finals) -> list[dict[str, Any]]:
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

    @staticmethod
    def _subset(spec, splits):
        """A fixed class-balanced subset of the test set for the layer-wise analyses."""
        x, y = splits.test.tensors
        n = min(spec["analysis"]["samples"], len(y))
        idx = np.sort(balanced_order(y.numpy(), np.random.default_rng(0))[:n])
        return x[idx], y[idx]

    @staticmethod
    def _features(model: nn.Module, layers: list[str], x: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
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

    def _analyse(self, spec, splits, teachers, students) -> list[dict[str, Any]]:
        """Long-form records of analyses (a) consistency with the teacher per block and at the output,
        (b) normalized label variation of each block's k-NN LGG."""
        a = spec["analysis"]
        x, y = self._subset(spec, splits)
        t_layers = [t for t, _ in a["blocks"]]
        s_layers = [s for _, s in a["blocks"]]
        t_feats = {s: self._features(t, t_layers, x, a["batch_size"]) for s, t in teachers.items()}
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
            feats = self._features(model, s_layers, x, a["batch_size"])
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

    @staticmethod
    def _table_rows(spec, per_run, teachers, students) -> list[dict[str, Any]]:
        by_method: dict[str, list[dict]] = {}
        for r in per_run:
            by_method.setdefault(r["method"], []).append(r)
        t_params = np.median([r["params"] for r in by_method["teacher"]])
        base_median = median_std(r["test_error"] for r in by_method[spec["baseline"]])[0]
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
                "params": int(np.median([r["params"] for r in runs])),
                "relative_size": float(np.median([r["params"] for r in runs]) / t_params),
                "agreement_median": agree,
                "seeds": n,
            })
        return rows

    def _write_tables(self, spec, ctx, rows, per_run, analysis) -> list[Path]:
        cols = [Column("label", "Method"), Column("test_error_median", "Test error (%) median", ".2f", 100),
                Column("test_error_std", "std", ".2f", 100),
                Column("gain_vs_baseline", "Gain vs baseline (points)", ".2f", 100, signed=True),
                Column("params", "Params"), Column("relative_size", "Relative size", ".3f"),
                Column("agreement_median", "Agreement with teacher (%)", ".1f", 100), Column("seeds", "Seeds")]
        t, s, d = spec["teacher"], spec["student"], spec["data"]
        teacher_runs = "one teacher per seed" if t["per_seed"] else f"one teacher (seed {t['seed']})"
        notes = (
            f"Profile `{spec['profile']}`: data `{d['name']}`{' ' + str(d['options']) if d['options'] else ''}; teacher `{t['model']}` {t['kwargs']} "
            f"({t['train']['epochs']} epochs, {teacher_runs}); student `{s['model']}` {s['kwargs']} ({s['train']['epochs']} epochs); "
            f"seeds {spec['seeds']}.\n\n"
            "Test error: median and sample std (ddof=1) over seeds. Gain: baseline median minus method median, in "
            "error points (positive = better than the baseline student). Relative size: student parameters / "
            "teacher parameters (FitNet's projection is discarded after training and not counted). Agreement: "
            "fraction of test samples on which the student's predicted class equals its teacher's (median over seeds)."
        )
        md, csv = ctx.results_dir / "table.md", ctx.results_dir / "table.csv"
        write_table(rows, cols, md, csv, title=f"{spec['name']}: knowledge distillation ({spec['profile']} profile)", notes=notes,
                    csv_keys=["method", "label", "test_error_median", "test_error_std", "gain_vs_baseline", "params",
                              "relative_size", "agreement_median", "seeds"])
        runs_csv, analysis_csv = ctx.results_dir / "runs.csv", ctx.results_dir / "analysis.csv"
        atomic_write_text(runs_csv, csv_text(per_run, ["run", "method", "seed", "test_error", "agreement", "params", "seconds"]))
        atomic_write_text(analysis_csv, csv_text(analysis, ["analysis", "method", "seed", "block", "layer", "value"]))
        return [md, csv, runs_csv, analysis_csv]

    # ------------------------------------------------------------------ figures
    def _figures(self, spec, ctx, per_run, analysis) -> list[Path]:
        labels = {"teacher": "Teacher", **{m: v["label"] for m, v in spec["methods"].items()}}
        a = spec["analysis"]
        # one colour per network, the same in every figure; the networks shown in the figures come first
        shown = dict.fromkeys(["teacher", spec["baseline"], *a["consistency"], *a["variation"], *a["graph_variants"], *labels])
        styles = dict(zip((labels[m] for m in shown), series_styles(len(shown))))
        colours = {name: c for name, (c, _) in styles.items()}
        df = pd.DataFrame(analysis)
        runs = pd.DataFrame(per_run)
        paths = []
        block_names = [f"block {i + 1}\n({t} / {s})" for i, (t, s) in enumerate(a["blocks"])]

        # (a) consistency with the teacher, block by block, and at the output
        cons = df[df["analysis"] == "consistency"].copy()
        if not cons.empty:
            cons["model"] = cons["method"].map(labels)
            fig, ax = new_figure(width=8.0, height=4.2)
            order = [labels[m] for m in a["consistency"]]
            sns.pointplot(data=cons, x="block", y="value", hue="model", hue_order=order, ax=ax, palette=colours,
                          errorbar=("pi", 100), dodge=0.3, markers=[styles[m][1] for m in order], capsize=0.1, linewidth=1.5)
            ax.set_xticks(range(len(block_names) + 1), block_names + ["output\n(predicted class)"])
            ax.set_xlabel("")
            ax.set_ylabel("agreement with the teacher")
            ax.set_title(f"(a) Consistency of the student's decisions with the teacher's, block by block\n"
                         f"leave-one-out {a['k']}-NN on each block's LGG ({a['samples']} test samples); "
                         f"median and range over {len(spec['seeds'])} seeds", fontsize=10)
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="student", frameon=False)
            paths.append(save_figure(fig, ctx.figures_dir / "consistency.png"))

        # (b) normalized label variation per block
        lv = df[df["analysis"] == "label_variation"].copy()
        if not lv.empty:
            lv["model"] = lv["method"].map(labels)
            fig, ax = new_figure(width=8.0, height=4.2)
            order = ["Teacher"] + [labels[m] for m in a["variation"]]
            sns.pointplot(data=lv, x="block", y="value", hue="model", hue_order=order, ax=ax, palette=colours,
                          errorbar=("pi", 100), dodge=0.3, markers=[styles[m][1] for m in order], capsize=0.1, linewidth=1.5)
            ax.set_xticks(range(len(block_names)), block_names)
            ax.set_xlabel("")
            ax.set_ylabel("normalized label variation\n(fraction of edge weight between classes)")
            ax.set_title(f"(b) Normalized label variation of each block's {a['k']}-NN LGG (lower = classes better separated)\n"
                         f"{a['samples']} test samples; median and range over {len(spec['seeds'])} seeds", fontsize=10)
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="network", frameon=False)
            paths.append(save_figure(fig, ctx.figures_dir / "label_variation.png"))

        # (c) full / inter-class / intra-class graphs
        variants = a["graph_variants"]
        if variants:
            sub = runs[runs["method"].isin(variants)].copy()
            sub["model"] = sub["method"].map(labels)
            sub["error"] = 100 * sub["test_error"]
            order = [labels[m] for m in variants]
            fig, ax = new_figure(width=7.5, height=4.2)
            # swarm: deterministic placement (a strip plot's jitter would draw from NumPy's global RNG)
            sns.swarmplot(data=sub, x="model", y="error", order=order, ax=ax, color="0.35", size=7, alpha=0.8, label="one seed")
            medians = sub.groupby("model")["error"].median().reindex(order)
            ax.scatter(range(len(order)), medians.values, marker="_", s=900, linewidths=3, color=PALETTE[5], zorder=5, label="median over seeds")
            refs = [(ref, style, 100 * runs[runs["method"] == ref]["test_error"].median())
                    for ref, style in (("teacher", ":"), (spec["baseline"], "--"))]
            for ref, style, value in refs:
                ax.axhline(value, ls=style, color="0.5", lw=1.2, label=f"{labels[ref]} (median)")
            values = [*sub["error"], *(v for _, _, v in refs)]
            pad = 0.08 * (max(values) - min(values) or 1.0)
            ax.set_ylim(min(values) - pad, max(values) + pad)  # reference lines inside the frame
            handles, names = ax.get_legend_handles_labels()
            keep = dict(zip(names, handles))  # one legend entry per label
            ax.legend(keep.values(), keep.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, markerscale=0.6)
            ax.set_xlabel("graph used by GKD")
            ax.set_ylabel("test error (%)")
            ax.set_title(f"(c) Test error of GKD with the full, inter-class and intra-class graphs\n"
                         f"one point per seed ({len(spec['seeds'])} seeds)", fontsize=10)
            paths.append(save_figure(fig, ctx.figures_dir / "graph_variants.png"))
        return paths
