"""Study kind ``robust``: robustness of a classifier trained with cross-entropy alone, with the label-variation
smoothness regularizer, with Parseval retraction, with both, and with PGD adversarial training (LGG paper
Section 4.3, Tables 3 and A1; Lassance, Gripon & Ortega, "Laplacian networks", 2021).

Spec fields (see ``studies/robust.toml`` for a commented example):

- ``data``: ``name`` (an image data set of ``geomlat.data``: corruptions need (C, H, W) images), ``seed``
  (the split, default 0), ``options`` (passed to ``load_dataset``).
- ``model``: ``model``, ``kwargs`` (a ``geomlat.models`` classifier with ``relu_names``).
- ``train``: :class:`geomlat.engine.TrainConfig` fields shared by every method (the seed comes from
  ``seeds``); ``methods.NAME.train`` overrides them.
- ``methods.NAME``: ``label``; ``objective`` = ``"supervised"`` (cross-entropy), ``"smoothness"``
  (cross-entropy + :class:`geomlat.losses.SmoothnessRegularizer`; ``kwargs`` are its arguments, ``layers``
  the captured modules, default every ReLU of the model) or ``"pgd"`` (:class:`geomlat.robustness.PGDTraining`;
  ``kwargs`` eps / alpha / steps); ``parseval`` = ``{beta = 0.01}`` to apply the Parseval retraction after
  every optimizer step (any objective).
- ``baseline``: the reference method of mCE and of the time ratio (default ``"baseline"``; a plain
  ``supervised`` method).
- ``attacks``: ``samples`` (test images attacked, class-balanced, default 500), ``fgsm_snr_db`` (per-image
  FGSM budget from an SNR in dB, default 33 as the authors), ``fgsm_eps`` (extra fixed L-inf budgets, a
  list), ``pgd_eps`` / ``pgd_alpha`` / ``pgd_steps`` (default 8/255, 2/255, 10), ``batch_size``.
- ``corruptions``: ``names`` (default all 15), ``severities`` (default 1..5), ``samples`` (test images
  corrupted, class-balanced; default all), ``seed``.

Every run of seed ``s`` starts from the same initialization (``torch.manual_seed(s)`` before building
the model), so methods are compared paired. Each run's evaluation is cached in ``RUN/eval.json``.
Corrupted test sets are computed once per study (``runs/.../corrupted/*.pt``, 8-bit like CIFAR-10-C).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ..data import balanced_order, load_dataset
from ..engine import Supervised, TrainConfig, read_json, train, write_json
from ..engine.io import atomic_save, load_checkpoint
from ..losses.objectives import SmoothnessObjective
from ..losses.regularizers import SmoothnessRegularizer
from ..models import MODELS, build_model
from ..robustness import (
    APPROXIMATIONS,
    CORRUPTION_NAMES,
    NON_MONOTONE,
    SEVERITIES,
    PGDTraining,
    ParsevalRetraction,
    corrupt,
    corruption_errors,
    fgsm,
    pgd,
    to_uint8,
)
from .common import data_fields as common_data_fields
from .figures import new_figure, save_figure, series_styles
from .runner import StudyContext, StudyKind, register_study_kind
from .spec import Fields, SpecError
from .tables import Column, median_std, write_table

__all__ = ["RobustStudy", "OBJECTIVES", "corrupted_sets", "mce_pair", "subset", "model_fields", "data_fields",
           "train_config", "seconds_per_epoch"]

OBJECTIVES = ("supervised", "smoothness", "pgd")
# sample shapes of the image data sets (for the dry run of the validation)
IMAGE_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}
#: Storage rule of the cached corrupted sets (2: CIFAR-10-C's truncation, ``to_uint8``; 1 rounded every set).
STORAGE_VERSION = 2


# ------------------------------------------------------------------------------------- shared helpers
def data_fields(fields: Fields, images: bool = True) -> dict[str, Any]:
    """``data`` table -> ``{name, seed, options}``; ``images``: require an image data set (corruptions)."""
    data = common_data_fields(fields)
    if images and data["name"] not in IMAGE_SHAPES:
        raise SpecError("data.name", f"corruptions need image data sets {sorted(IMAGE_SHAPES)}, got {data['name']!r}")
    return data


def model_fields(fields: Fields, key: str = "model") -> dict[str, Any]:
    f = fields.fields(key)
    entry = {"model": f.str("model"), "kwargs": f.table_("kwargs", {})}
    f.finish()
    if entry["model"] not in MODELS:
        raise SpecError(f"{key}.model", f"unknown model {entry['model']!r}; registered models: {sorted(MODELS)}")
    if "out_dim" in entry["kwargs"]:
        raise SpecError(f"{key}.kwargs.out_dim", "set the output width per method, not on the model")
    return entry


def build(entry: dict[str, Any], path: str = "model", **extra) -> nn.Module:
    try:
        return build_model(entry["model"], **{**entry["kwargs"], **extra})
    except (TypeError, ValueError) as err:
        raise SpecError(f"{path}.kwargs", str(err)) from err


def train_config(table: dict[str, Any], path: str, seed: int = 0) -> TrainConfig:
    """A TrainConfig from a spec table (type-checked; errors name the field)."""
    from .common import train_config_from_fields  # the runner's shared parser

    return train_config_from_fields(table, path, seed)


def load_splits(data: dict[str, Any], ctx: StudyContext):
    try:
        return load_dataset(data["name"], ctx.data_dir, seed=data["seed"], **data["options"])
    except TypeError as err:
        raise SpecError("data.options", str(err)) from err


def subset(dataset, samples: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``samples`` of a seeded class-balanced order of ``dataset`` (all when None): (x, y)."""
    x, y = dataset.tensors[0], dataset.tensors[1]
    if samples is None or samples >= len(y):
        return x, y
    order = balanced_order(y.numpy(), np.random.default_rng([seed, 7]))[:samples]
    idx = torch.from_numpy(np.sort(order))
    return x[idx], y[idx]


def corrupted_sets(x: Tensor, names: list[str], severities: list[int], seed: int, cache_dir: Path,
                   chunk: int = 1000) -> Iterator[tuple[str, int, Tensor]]:
    """Yield ``(name, severity, corrupted x)`` for every corruption and severity of images ``x`` (N, C, H, W).

    Each set draws from ``default_rng([seed, index of the corruption, severity])`` (as
    :func:`geomlat.robustness.evaluate_corruptions`) and is cached in ``cache_dir`` as 8-bit images stored as
    the CIFAR-10-C files are (:func:`geomlat.robustness.corruptions.to_uint8`: truncated, or rounded where the
    reference's output is already 8-bit), so every model of a study sees exactly the same corrupted images.
    A cached set written with another storage rule (:data:`STORAGE_VERSION`) is recomputed.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        for severity in severities:
            path = cache_dir / f"{name}_{severity}.pt"
            if path.exists():
                stored = load_checkpoint(path)
                if stored["n"] == len(x) and stored["seed"] == seed and stored.get("storage") == STORAGE_VERSION:
                    yield name, severity, stored["images"].float() / 255.0
                    continue
            rng = np.random.default_rng([seed, CORRUPTION_NAMES.index(name), severity])
            # float64 outputs, stored as CIFAR-10-C stores them (np.uint8 truncation; see to_uint8)
            q = torch.cat([to_uint8(corrupt(x[i:i + chunk].double(), name, severity, rng), name)
                           for i in range(0, len(x), chunk)])
            atomic_save({"images": q, "n": len(x), "seed": seed, "storage": STORAGE_VERSION}, path)
            yield name, severity, q.float() / 255.0


def mce_pair(table: dict[str, list[float]], clean: float, base_table: dict[str, list[float]], base_clean: float
             ) -> tuple[float, float, list[str]]:
    """``(mCE, relative mCE, corruptions left out of the relative mCE)`` in percent.

    The relative CE of a corruption is undefined when the baseline's summed error increase over its clean
    error is <= 0 (the corruption does not hurt it): such corruptions are left out of the relative mean
    and returned by name.
    """
    ces = corruption_errors(table, base_table)
    kept = [c for c in table if sum(e - base_clean for e in base_table[c]) > 0]
    dropped = [c for c in table if c not in kept]
    rel = (corruption_errors({c: table[c] for c in kept}, base_table, clean, base_clean, relative=True)
           if kept else {})
    return float(np.mean(list(ces.values()))), float(np.mean(list(rel.values()))) if rel else math.nan, dropped


def seconds_per_epoch(run_dir: Path) -> float:
    """Median training seconds per epoch of a run (from ``metrics.jsonl``; evaluation time excluded)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(np.median([line["seconds"] for line in lines]))


def corruption_notes(names: list[str]) -> str:
    approx = [n for n in names if n in APPROXIMATIONS]
    nonmono = [n for n in names if n in NON_MONOTONE]
    text = ""
    if approx:
        text += ("Corruptions that are approximations of the CIFAR-10-C reference (see "
                 "`geomlat.robustness.APPROXIMATIONS`): " + ", ".join(f"`{n}`" for n in approx) + ". ")
    if nonmono:
        text += ("Corruptions whose reference severities are not monotone in distance (`NON_MONOTONE`): "
                 + ", ".join(f"`{n}`" for n in nonmono) + ".")
    return text


def _error_of(predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, batch: int = 512) -> float:
    wrong = sum(int((predict(x[i:i + batch]).cpu() != y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    return wrong / len(y)


def _num_list(f: Fields, key: str, default: list) -> list[float]:
    values = f.list(key, default, item=(int, float))
    for i, v in enumerate(values):
        if not (math.isfinite(v) and v > 0):
            raise SpecError(f"{f.sub(key)}[{i}]", f"must be a finite number > 0, got {v}")
    return [float(v) for v in values]


def corruption_fields(fields: Fields) -> dict[str, Any]:
    f = fields.fields("corruptions", {})
    names = f.list("names", list(CORRUPTION_NAMES), item=str)
    for i, n in enumerate(names):
        if n not in CORRUPTION_NAMES:
            raise SpecError(f"corruptions.names[{i}]", f"unknown corruption {n!r}; valid: {list(CORRUPTION_NAMES)}")
    sev = f.list("severities", list(SEVERITIES), item=int, nonempty=True)
    for i, s in enumerate(sev):
        if s not in SEVERITIES:
            raise SpecError(f"corruptions.severities[{i}]", f"severities are 1..5, got {s}")
    out = {"names": names, "severities": sev, "samples": f.int("samples", None, minimum=10), "seed": f.int("seed", 0, minimum=0)}
    f.finish()
    if not names:
        raise SpecError("corruptions.names", "must not be empty")
    return out


# ----------------------------------------------------------------------------------------- the kind
def make_objective(method: dict[str, Any], model: nn.Module, seed: int) -> nn.Module:
    """The training objective of a method of the ``robust`` kind."""
    if method["objective"] == "supervised":
        return Supervised(model)
    if method["objective"] == "smoothness":
        layers = None if method["layers"] == "relu" else method["layers"]
        return SmoothnessObjective(model, layers, SmoothnessRegularizer(**method["kwargs"]))
    return PGDTraining(model, seed=seed, **method["kwargs"])


@register_study_kind("robust")
class RobustStudy(StudyKind):
    """Robustness study (see the module docstring for the spec)."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        data = data_fields(fields)
        model = model_fields(fields)
        common = fields.table_("train", {})
        train_config(common, "train")
        probe = build(model)
        if len(getattr(probe, "relu_names", [])) < 2:
            raise SpecError("model.model", f"{model['model']} has no relu_names (>= 2 needed by the regularizer)")

        methods_f = fields.fields("methods")
        if not methods_f.table:
            raise SpecError("methods", "declare at least one method")
        methods = {}
        x = torch.rand((4, *IMAGE_SHAPES[data["name"]]), generator=torch.Generator().manual_seed(0))
        y = torch.tensor([0, 1, 0, 1])
        for name in methods_f.table:
            mf = methods_f.fields(name)
            m = {"label": mf.str("label", name), "objective": mf.str("objective", "supervised", choices=OBJECTIVES),
                 "kwargs": mf.table_("kwargs", {})}
            layers = mf.raw("layers", "relu")
            if layers != "relu" and not (isinstance(layers, list) and all(isinstance(v, str) for v in layers)):
                raise SpecError(mf.sub("layers"), f"expected \"relu\" or a list of module names, got {layers!r}")
            if layers != "relu" and m["objective"] != "smoothness":
                raise SpecError(mf.sub("layers"), "only the smoothness objective captures layers")
            m["layers"] = layers
            pf = mf.raw("parseval", False)
            if pf is False:
                m["parseval"] = None
            elif isinstance(pf, dict):
                pfi = Fields(pf, mf.sub("parseval"))
                m["parseval"] = {"beta": pfi.number("beta", 0.01)}
                pfi.finish()
                try:
                    ParsevalRetraction(m["parseval"]["beta"])
                except ValueError as err:
                    raise SpecError(mf.sub("parseval.beta"), str(err)) from err
            else:
                raise SpecError(mf.sub("parseval"), f"expected false or a table {{beta = ...}}, got {pf!r}")
            own = mf.table_("train", {})
            train_config(own, mf.sub("train"))
            m["train"] = train_config({**common, **own}, mf.sub("train")).to_dict()
            if m["objective"] == "supervised" and m["kwargs"]:
                raise SpecError(mf.sub("kwargs"), "the supervised objective takes no kwargs")
            mf.finish()
            try:
                objective = make_objective(m, build(model), 0)
                objective.train()
                out, losses = objective(x, y)
                sum(losses.values()).backward()
            except (KeyError, ValueError, TypeError, RuntimeError) as err:
                raise SpecError(f"methods.{name}", f"the objective fails on a dummy batch: {err}") from err
            methods[name] = m
        baseline = fields.str("baseline", "baseline")
        if baseline not in methods:
            raise SpecError("baseline", f"method {baseline!r} is not declared in `methods` ({sorted(methods)})")
        if methods[baseline]["objective"] != "supervised" or methods[baseline]["parseval"]:
            raise SpecError("baseline", f"the baseline {baseline!r} must be a plain supervised method")

        af = fields.fields("attacks", {})
        attacks = {"samples": af.int("samples", 500, minimum=1), "fgsm_snr_db": af.number("fgsm_snr_db", 33.0),
                   "fgsm_eps": _num_list(af, "fgsm_eps", []),
                   "pgd_eps": af.number("pgd_eps", 8 / 255, minimum=0.0), "pgd_alpha": af.number("pgd_alpha", 2 / 255, minimum=1e-12),
                   "pgd_steps": af.int("pgd_steps", 10, minimum=1), "batch_size": af.int("batch_size", 256, minimum=1)}
        af.finish()
        return {"data": data, "model": model, "methods": methods, "baseline": baseline, "attacks": attacks,
                "corruptions": corruption_fields(fields)}

    # ---------------------------------------------------------------------------------------- running
    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        splits = load_splits(spec["data"], ctx)
        seeds, methods = spec["seeds"], spec["methods"]
        ctx.log(f"[{ctx.name}/{ctx.profile}] {len(seeds) * len(methods)} runs under {ctx.runs_dir}")
        cor = spec["corruptions"]
        x_cor, y_cor = subset(splits.test, cor["samples"], cor["seed"])
        x_att, y_att = subset(splits.test, spec["attacks"]["samples"], 1)
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for seed in seeds:  # seeds outer: the methods of a seed run back to back (fair timings)
            for name, method in methods.items():
                run_dir = ctx.runs_dir / f"{name}_s{seed}"
                torch.manual_seed(seed)
                model = build(spec["model"])
                objective = make_objective(method, model, seed)
                after = ParsevalRetraction(method["parseval"]["beta"]) if method["parseval"] else None
                config = TrainConfig.from_dict({**method["train"], "seed": seed})
                ctx.log(f"[{ctx.name}/{ctx.profile}] training {run_dir.name}")
                train(objective, splits, config, run_dir, after_step=after, progress=ctx.progress,
                      record={"method": name, "objective": method["objective"], "kwargs": method["kwargs"],
                              "layers": method["layers"], "parseval": method["parseval"], "model": spec["model"]})
                results[(name, seed)] = self._evaluate(spec, ctx, run_dir, objective, splits, x_att, y_att, x_cor, y_cor, config)
        rows, per_run = self._rows(spec, results)
        ctx.results_dir.mkdir(parents=True, exist_ok=True)
        paths = self._write(spec, ctx, rows, per_run)
        paths.append(self._figure(spec, ctx, results))
        return {"rows": rows, "runs": per_run, "paths": [str(p) for p in paths]}

    def _evaluate(self, spec, ctx, run_dir: Path, objective, splits, x_att, y_att, x_cor, y_cor, config) -> dict[str, Any]:
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

    def _rows(self, spec, results) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
        keys = ["clean", "fgsm_snr"] + [f"fgsm_{e}" for e in map(str, spec["attacks"]["fgsm_eps"])] + ["pgd", "mce", "rel_mce", "seconds_per_epoch", "time_ratio"]
        for name, method in spec["methods"].items():
            row: dict[str, Any] = {"method": name, "label": method["label"], "n": len(seeds)}
            for k in keys:
                row[k], row[f"{k}_std"], _ = median_std(line[k] for line in per_run if line["method"] == name)
            rows.append(row)
        return rows, per_run

    def _write(self, spec, ctx, rows, per_run) -> list[Path]:
        att = spec["attacks"]
        pm = lambda k, t, fmt=".2f", scale=100.0: [Column(k, t, fmt, scale), Column(f"{k}_std", "±", fmt, scale)]  # noqa: E731
        cols = [Column("label", "Method")] + pm("clean", "Clean error (%)")
        cols += pm("fgsm_snr", f"FGSM {att['fgsm_snr_db']:g} dB (%)")
        for e in att["fgsm_eps"]:
            cols += pm(f"fgsm_{e}", f"FGSM eps={e:.3g} (%)")
        cols += pm("pgd", f"PGD-{att['pgd_steps']} eps={att['pgd_eps']:.3g} (%)")
        cols += pm("mce", "mCE", ".1f", 1.0) + pm("rel_mce", "Relative mCE", ".1f", 1.0)
        cols += [Column("seconds_per_epoch", "s / epoch", ".2f"), Column("time_ratio", "Time / epoch (x baseline)", ".2f")]
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
        md, csv = ctx.results_dir / "table.md", ctx.results_dir / "table.csv"
        keys = ["method", "label", "n"] + [k for c in cols[1:] for k in [c.key]]
        write_table(rows, cols, md, csv, title=f"Robustness ({ctx.profile} profile)", notes=notes, csv_keys=keys)
        runs_csv = ctx.results_dir / "runs.csv"
        from .tables import csv_text
        from ..engine.io import atomic_write_text

        run_keys = sorted({k for line in per_run for k in line} - {"rel_dropped"}, key=lambda k: (k not in ("method", "seed"), k))
        atomic_write_text(runs_csv, csv_text(per_run, run_keys))
        return [md, csv, runs_csv]

    def _figure(self, spec, ctx, results) -> Path:
        fig, ax = new_figure(1, width=6.5, height=4.2)
        sev = [0] + list(spec["corruptions"]["severities"])
        for (color, marker), (name, method) in zip(series_styles(len(spec["methods"])), spec["methods"].items()):
            curves = []
            for seed in spec["seeds"]:
                r = results[(name, seed)]
                by_sev = np.mean([r["corruptions"][c] for c in spec["corruptions"]["names"]], axis=0)
                curves.append([r["clean_cor"]] + list(by_sev))
            curves = 100 * np.asarray(curves)
            med = np.median(curves, axis=0)
            ax.plot(sev, med, "-", marker=marker, color=color, label=method["label"])
            if len(curves) > 1:
                ax.fill_between(sev, curves.min(0), curves.max(0), color=color, alpha=0.15)
        ax.set_xticks(sev)
        ax.set_xticklabels(["clean"] + [str(s) for s in sev[1:]])
        ax.set_xlabel("corruption severity")
        ax.set_ylabel(f"test error (%), mean over {len(spec['corruptions']['names'])} corruptions")
        ax.set_title(f"Error vs corruption severity ({spec['data']['name']})\nmedian over seeds, band = min-max over seeds")
        ax.legend()
        ctx.figures_dir.mkdir(parents=True, exist_ok=True)
        return save_figure(fig, ctx.figures_dir / "error_vs_severity.png")
