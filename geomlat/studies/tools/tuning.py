"""Validation-tuned hyperparameters of the ``robust`` and ``embed`` studies (``geomlat study NAME --tune``).

A spec's ``[tune]`` table (usually inside a profile, e.g. ``[profiles.quick.tune]``) declares a small grid
of settings per method, trained on the training set minus a validation split held out of it
(``val_size`` samples, class-balanced, :func:`geomlat.data.load_dataset`'s ``val_size``) and scored on that
validation split only; the test set is never touched. One selection rule, the same for every method:

1. the method's settings are scored by the mean over ``seeds`` of the validation error ``select``;
2. every setting within ``tolerance`` points of the method's best score is a tie (differences of that
   size are within the noise of the validation estimate);
3. among ties, the lowest mean ``tiebreak`` metric wins (e.g. the PGD error: the robustness the method
   is for), then the lowest ``select`` score, then the earlier setting of the grid.

Fields of ``[tune]``:

- ``val_size`` (int >= 1), ``seeds`` (non-empty list of ints >= 0).
- ``select``: the validation metric minimized. ``robust``: ``"clean"``, ``"fgsm"`` (the spec's per-image
  SNR budget) or ``"pgd"`` (the spec's PGD attack); ``embed``: ``"knn"``, ``"ncm"`` or ``"logreg"`` (fitted
  on the training embedding).
- ``tolerance`` (points, >= 0), ``tiebreak`` (a metric as ``select``, or ``"none"``).
- ``grid.METHOD``: either a table ``{"dotted.path" = [values...]}`` (the cartesian product of the lists),
  or an array of tables (explicit settings ``{"dotted.path" = value}``). A path names a field of the
  method's table (``kwargs.gamma``, ``train.weight_decay``, ``parseval.beta``); the string ``"none"``
  removes the field (its default applies, e.g. ``kwargs.k = "none"``: full graph). A path that some settings
  of a method set and others leave out takes, in the latter, the value of the base spec (the papers' value),
  not the profile's: settings keep their meaning once the chosen values are written into the profile. Every
  setting is validated as the study itself validates its methods before anything is trained.

Writes ``results/tune-NAME/grid.csv`` (+ ``grid.md``, ``chosen.toml``: the chosen values as a spec
fragment) and ``figures/tune-NAME/tradeoff.png``; runs under ``runs/tune-NAME/PROFILE/``.
The chosen values are then copied into the spec's profile by hand and committed (the studies do not read
the tuning results).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ...engine import read_json, train, write_json
from ...io import atomic_write_text, load_checkpoint
from ..figures import new_figure, save_figure, series_styles
from ..processes import torch_threads
from ..runner import StudyKind, kind_packages, load_spec, load_study_kind
from ..spec import Fields, SpecError, apply_profile, deep_merge, find_spec_file, read_spec_file
from ..tables import Column, csv_text, write_table

__all__ = ["tune_fields", "setting_id", "select_setting", "run_tuning"]

NONE = "none"  # a grid value that removes the field (its default applies)


# ------------------------------------------------------------------------------------------ the spec
def _setting_list(value: Any, path: str) -> list[dict[str, Any]]:
    """A grid entry (table of lists, or array of tables) -> list of ``{dotted path: value}``."""
    if isinstance(value, Mapping):
        if not value:
            raise SpecError(path, "empty grid: give at least one field with a list of values")
        for key, values in value.items():
            if not isinstance(values, list) or not values:
                raise SpecError(f"{path}.{key}", f"expected a non-empty array of values, got {values!r}")
        keys = list(value)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(value[k] for k in keys))]
    if isinstance(value, list) and value:
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or not item:
                raise SpecError(f"{path}[{i}]", f"expected a non-empty table of field = value, got {item!r}")
        return [dict(item) for item in value]
    raise SpecError(path, f"expected a table of arrays or a non-empty array of tables, got {value!r}")


def _apply(method: Mapping[str, Any], setting: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Copy of a raw method table with the setting's dotted paths set (``"none"`` removes the field)."""
    out = copy.deepcopy(dict(method))
    for key, value in setting.items():
        parts = key.split(".")
        if not all(parts):
            raise SpecError(f"{path}.{key}", "malformed dotted path")
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise SpecError(f"{path}.{key}", f"{part!r} is not a table in the method")
            node = nxt
        if value == NONE:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = copy.deepcopy(value)
    return out


def _get(table: Mapping[str, Any], dotted: str) -> Any:
    """Value at a dotted path of a nested table, or ``"none"`` when absent."""
    node: Any = table
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return NONE
        node = node[part]
    return copy.deepcopy(node)


def setting_id(setting: Mapping[str, Any]) -> str:
    """Short readable name of a setting, e.g. ``gamma=0.003,power=1``."""
    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)
    return ",".join(f"{k.rsplit('.', 1)[-1]}={fmt(v)}" for k, v in setting.items())


def tune_fields(raw_spec: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """Validate the ``tune`` table of a raw spec under ``profile``.

    Returns ``{"val_size", "seeds", "select", "tolerance", "tiebreak", "kind",
    "grid": {method: [{"setting": {path: value}, "id": str, "method": raw method table}]}}``; each setting is
    validated by the study kind (load_spec) with the validation split held out. Errors name the field
    (``tune.grid.METHOD...``).
    """
    spec = apply_profile(raw_spec, profile)
    if "tune" not in spec:
        raise SpecError("tune", f"this spec has no `tune` table under profile {profile!r}")
    kind = spec.get("kind")
    metrics = load_study_kind(kind).validation_metrics if isinstance(kind, str) else ()
    if not metrics:
        tunable = sorted(k for k in kind_packages() if load_study_kind(k).validation_metrics)
        raise SpecError("kind", f"tuning supports the kinds {tunable}, got {kind!r}")
    f = Fields(spec["tune"], "tune")
    out: dict[str, Any] = {"kind": kind, "val_size": f.int("val_size", minimum=1),
                           "seeds": f.list("seeds", item=int, nonempty=True),
                           "select": f.str("select", choices=metrics),
                           "tolerance": f.number("tolerance", 0.0, minimum=0.0),
                           "tiebreak": f.str("tiebreak", NONE, choices=(*metrics, NONE))}
    for i, s in enumerate(out["seeds"]):
        if s < 0:
            raise SpecError(f"tune.seeds[{i}]", f"seeds must be >= 0, got {s}")
    grid_f = f.fields("grid")
    f.finish()
    methods = spec.get("methods", {})
    if not grid_f.table:
        raise SpecError("tune.grid", "declare the settings of at least one method")
    grid: dict[str, list[dict[str, Any]]] = {}
    for name in grid_f.table:
        path = f"tune.grid.{name}"
        if name not in methods:
            raise SpecError(path, f"unknown method {name!r}; the spec declares {sorted(methods)}")
        entries, seen = [], set()
        settings = _setting_list(grid_f.raw(name), path)
        # a path that a setting leaves out takes the base spec's value (not a profile's, which may hold the
        # values chosen by an earlier tuning): every setting means the same whatever was chosen
        paths = list(dict.fromkeys(k for setting in settings for k in setting))
        base = raw_spec.get("methods", {}).get(name, {})
        for i, setting in enumerate(settings):
            full = {k: setting.get(k, _get(base, k)) for k in paths}
            method = _apply(methods[name], full, path)
            sid = setting_id(setting)
            if sid in seen:
                raise SpecError(path, f"setting {sid} appears twice")
            seen.add(sid)
            entries.append({"setting": setting, "id": sid, "method": method})
        grid[name] = entries
    grid_f.finish()
    out["grid"] = grid
    # every setting through the study's own validation (one call: all settings as separate methods)
    probe = {f"{name}__{i}": e["method"] for name, entries in grid.items() for i, e in enumerate(entries)}
    try:
        validated = _load(raw_spec, profile, out, probe, seeds=out["seeds"])
    except SpecError as err:
        where = err.path.split(".")
        if len(where) >= 2 and where[0] == "methods" and "__" in where[1]:
            name, i = where[1].rsplit("__", 1)
            inner = str(err)[len(err.path) + 2:]  # the message without the internal method name
            raise SpecError(".".join([f"tune.grid.{name}", *where[2:]]), f"setting {grid[name][int(i)]['id']}: {inner}") from err
        raise
    for name, entries in grid.items():
        for i, e in enumerate(entries):
            e["probe"] = f"{name}__{i}"  # the setting's method in the validated spec
            e["spec_method"] = validated["methods"][e["probe"]]
    out["spec"] = validated
    return out


def _load(raw_spec, profile, tune, methods, seeds):
    """The study spec with ``methods`` replaced and the validation split held out (validated)."""
    spec = apply_profile(raw_spec, profile)
    spec.pop("tune", None)
    spec.pop("comparisons", None)  # they name the study's methods; the tuning spec has the grid's settings instead
    spec["methods"] = methods
    data = dict(spec.get("data", {}))
    data["options"] = {**dict(data.get("options", {})), "val_size": tune["val_size"]}
    spec["data"] = data
    spec = load_study_kind(tune["kind"]).tuning_spec(spec)
    return load_spec({k: v for k, v in spec.items() if k != "profile"} | {"profiles": {profile: {}}}, profile, seeds=seeds)


# --------------------------------------------------------------------------------------- selection
def select_setting(rows: Sequence[Mapping[str, Any]], select: str, tolerance: float, tiebreak: str = NONE) -> int:
    """Index of the setting the rule picks among ``rows`` (one method's settings, in grid order).

    ``rows[i][metric]``: mean validation error in [0, 1]; ``tolerance`` in points (percent). Settings with
    ``select <= best + tolerance / 100`` are ties; among them the lowest ``tiebreak`` (if not ``"none"``),
    then the lowest ``select``, then the first in grid order. A NaN score never wins.
    """
    if not rows:
        raise ValueError("no settings to select from")
    scores = [float(r[select]) for r in rows]
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        raise ValueError(f"every setting has a non-finite {select!r} score")
    best = min(finite)
    ties = [i for i, s in enumerate(scores) if math.isfinite(s) and s <= best + tolerance / 100.0 + 1e-12]

    def key(i: int):
        tb = float(rows[i][tiebreak]) if tiebreak != NONE else 0.0
        return (tb if math.isfinite(tb) else math.inf, scores[i], i)

    return min(ties, key=key)


# -------------------------------------------------------------------------------------------- runs
def val_splits(spec):
    """The tuning splits of a spec: train minus the held-out validation images, and that validation split
    in the ``test`` slot (the engine's per-epoch error is then the validation error; the test set is unused)."""
    from ...data import load_dataset

    d = spec["data"]
    splits = load_dataset(d["name"], None, seed=d["seed"], **d["options"])
    if splits.val is None:
        raise SpecError("tune.val_size", "the data set returned no validation split")
    return dataclasses.replace(splits, test=splits.val, val=None)  # the engine's per-epoch error is on val


def validation_run(kind: StudyKind, spec, method_name: str, splits, seed: int, run_dir: Path, progress: bool) -> dict[str, float]:
    """Train one setting (``spec["methods"][method_name]``) and ``seed`` on the tuning splits through the kind's
    :meth:`~StudyKind.build_run` (evaluated once, after the last epoch), then its validation errors
    (:meth:`~StudyKind.validation_errors`, cached in ``RUN/val.json``) with the training seconds."""
    plan = kind.build_run(spec, method_name, seed, splits)
    plan.config = dataclasses.replace(plan.config, eval_every=plan.config.epochs)
    final = train(plan.objective, splits, plan.config, run_dir, after_step=plan.after_step, evaluate=plan.evaluate,
                  progress=progress, record=plan.record)
    path = run_dir / "val.json"
    if path.exists():
        return read_json(path)
    device = next(plan.objective.parameters()).device
    plan.objective.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt", map_location=device)["objective"])
    plan.objective.eval()
    out = {**kind.validation_errors(spec, plan, splits, final), "seconds": final["seconds"]}
    write_json(path, out)
    return out


def run_tuning(name: str | Path, profile: str = "quick", out_root: str | Path = ".", *, progress: bool = True,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every setting of the spec's ``tune`` grid on every tuning seed, score it on the validation
    split, apply the selection rule and write the grid table, the chosen values and the trade-off figure.
    Finished runs are reused (``runs/tune-NAME/PROFILE``). Returns ``{"rows", "chosen", "paths", "seconds"}``."""
    raw = read_spec_file(find_spec_file(name)) if not isinstance(name, Mapping) else dict(name)
    tune = tune_fields(raw, profile)
    spec, kind = tune["spec"], tune["kind"]
    study = f"tune-{spec['name']}"
    out_root = Path(out_root)
    runs_dir = out_root / "runs" / study / profile
    results_dir, figures_dir = out_root / "results" / study, out_root / "figures" / study
    study_kind = load_study_kind(kind)
    metrics = study_kind.validation_metrics + study_kind.validation_extras
    start, cpu_start = time.perf_counter(), time.process_time()
    splits = val_splits(spec)
    n_runs = sum(len(v) for v in tune["grid"].values()) * len(tune["seeds"])
    log(f"[{study}/{profile}] {n_runs} runs on {len(splits.train)} training / {len(splits.test)} validation samples under {runs_dir}")
    rows: list[dict[str, Any]] = []
    with torch_threads(spec["threads"]):
        for method_name, entries in tune["grid"].items():
            method_rows = []
            for i, e in enumerate(entries):
                per_seed = []
                for seed in tune["seeds"]:
                    run_dir = runs_dir / method_name / f"{i:02d}_s{seed}"
                    log(f"[{study}/{profile}] {method_name} {e['id']} seed {seed}")
                    per_seed.append(validation_run(study_kind, spec, e["probe"], splits, seed, run_dir, progress))
                row = {"method": method_name, "label": e["spec_method"]["label"], "setting": e["id"],
                       "params": json.dumps(e["setting"], sort_keys=True), "seeds": len(per_seed),
                       "seconds": float(np.mean([r["seconds"] for r in per_seed]))}
                for m in metrics:
                    vals = [float(r[m]) for r in per_seed]
                    row[m], row[f"{m}_std"] = float(np.mean(vals)), float(np.std(vals))
                    row[f"{m}_per_seed"] = " ".join(f"{v:.4f}" for v in vals)
                method_rows.append(row)
            chosen = select_setting(method_rows, tune["select"], tune["tolerance"], tune["tiebreak"])
            for i, row in enumerate(method_rows):
                row["chosen"] = i == chosen
            rows.extend(method_rows)
    chosen = {r["method"]: json.loads(r["params"]) for r in rows if r["chosen"]}
    paths = _write(tune, spec, rows, chosen, results_dir, metrics, profile)
    from ..machine import write_machine_info

    paths.append(write_machine_info(results_dir))  # the CPU, threads, BLAS and versions behind the grid
    paths.append(_figure(study_kind, tune, spec, rows, figures_dir))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    log(f"[{study}/{profile}] done in {seconds:.0f} s wall, {cpu:.0f} s CPU; chosen: {chosen}")
    return {"rows": rows, "chosen": chosen, "paths": [str(p) for p in paths], "seconds": seconds, "cpu_seconds": cpu}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def _write(tune, spec, rows, chosen, results_dir: Path, metrics, profile) -> list[Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    keys = ["method", "label", "setting", "params", "seeds", "chosen"]
    for m in metrics:
        keys += [m, f"{m}_std", f"{m}_per_seed"]
    keys.append("seconds")
    csv_path, md_path = results_dir / "grid.csv", results_dir / "grid.md"
    cols = [Column("label", "Method"), Column("setting", "Setting"), Column("chosen_mark", "Chosen")]
    for m in metrics:
        scale, fmt = (1.0, ".4f") if m == "loss" else (100.0, ".2f")
        title = "training loss" if m == "loss" else f"val {m} error (%)"
        cols += [Column(m, title, fmt, scale), Column(f"{m}_std", "±", fmt, scale)]
    cols.append(Column("seconds", "train s", ".0f"))
    shown = [{**r, "chosen_mark": "**yes**" if r["chosen"] else ""} for r in rows]
    if tune["tiebreak"] != NONE:
        rule = (f"lowest mean validation `{tune['select']}` error over seeds {tune['seeds']}; settings within "
                f"{tune['tolerance']:g} points of a method's best are ties, broken by the lowest validation "
                f"`{tune['tiebreak']}` error (then the lowest `{tune['select']}` error, then grid order)")
    else:  # select_setting: without a tiebreak the lowest score among the ties is the lowest score
        rule = (f"lowest mean validation `{tune['select']}` error over seeds {tune['seeds']} (grid order on equal "
                "errors)")
    notes = (f"Validation split: {tune['val_size']} samples held out of the {spec['data']['name']} training set "
             f"(class-balanced); every setting trained on the rest with the study's recipe "
             f"({spec['model']['model']} {spec['model']['kwargs']}). Mean ± std over the tuning seeds. Rule: {rule}. "
             "The test set is not used.")
    write_table(shown, cols, md_path, csv_path, title=f"Validation grid of the {spec['name']} study ({profile} profile)",
                notes=notes, csv_keys=keys)
    atomic_write_text(csv_path, csv_text(rows, keys))
    lines = [f"# chosen by `geomlat study {spec['name']} --tune --profile {profile}` ({rule})"]
    for method, setting in chosen.items():
        lines.append(f"[profiles.{profile}.methods.{method}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in setting.items()]
    toml_path = results_dir / "chosen.toml"
    atomic_write_text(toml_path, "\n".join(lines) + "\n")
    return [md_path, csv_path, toml_path]


def _figure(kind, tune, spec, rows, figures_dir: Path) -> Path:
    """The kind's figure of the grid (:meth:`StudyKind.tuning_figure`), else the selected metric per setting."""
    fig = kind.tuning_figure(tune, spec, rows)
    if fig is None:
        fig = _metric_figure(tune, spec, rows)
    figures_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, figures_dir / "tradeoff.png")


def _metric_figure(tune, spec, rows):
    """Mean ± std of the selected validation error of every setting, grouped by method (filled: chosen)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    styles = dict(zip(methods, series_styles(len(methods))))
    fig, ax = new_figure(1, width=10, height=5.0)
    x = 0
    ticks, labels = [], []
    sel = tune["select"]
    for m in methods:
        color, marker = styles[m]
        rs = [r for r in rows if r["method"] == m]
        ax.text(x + (len(rs) - 1) / 2, 1.02, rs[0]["label"], transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8, color=color)
        for r in rs:
            ax.errorbar([x], [100 * r[sel]], yerr=[100 * r[f"{sel}_std"]], color=color, marker=marker,
                        markersize=9 if r["chosen"] else 5, mfc=color if r["chosen"] else "white", capsize=2)
            ticks.append(x)
            labels.append(r["setting"])
            x += 1
        x += 0.5
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel(f"validation {sel} error (%), log scale")
    fig.suptitle(f"Validation grid of the {spec['name']} study (mean ± std over seeds {tune['seeds']}; filled: chosen)")
    return fig
    