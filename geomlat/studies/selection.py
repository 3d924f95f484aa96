"""Study kind ``selection``: does the geometry predict generalization? (issue 15; ``papers/004``; Jiang et al. 2020).

A population of models (``model``, e.g. ``conv1d``) is trained on one data set, varying width, depth, weight decay,
label noise, training-set size and seed (:func:`._selection_runs.population`: every centre and its one-axis-at-a-time
variations, plus a random sample of the grid, each trained with every seed of ``seeds``). Weights are kept at the
``analysis.snapshots`` epochs. At each snapshot every candidate measure is computed on training data only
(:func:`._selection_runs.snapshot_measures`; the stability between seeds compares the models of one configuration),
and :mod:`._selection_report` writes Kendall's tau with the test error and the gap, the granulated Kendall
coefficient per axis, model-selection and early-stopping regret (bootstrap CIs) and the figures.

Spec fields (see ``studies/selection.toml``): ``data`` (``options.val_size`` required: the held-out validation split
of the reference baseline, never used by the candidates), ``model`` (a model name taking ``width`` and ``depth``),
``train`` (:class:`~geomlat.engine.TrainConfig` fields except ``weight_decay`` and ``seed``; ``eval_every`` must be 1),
``population``: ``centres`` (list of tables of axis values), ``axes`` (``{axis: [values]}``, >= 2 values each,
axes among width, depth, weight_decay, label_noise, train_size), ``fixed`` (values of the axes not varied),
``random`` (extra configurations, 0), ``sample_seed`` (0); ``analysis``: ``samples`` (500), ``snapshots`` (epochs),
``nnk_k`` (15), ``graph_k`` (10), ``channel_k`` (10), ``sharpness_sigma`` (0.05), ``sharpness_samples`` (3),
``patience`` (1), ``n_boot`` (1000). At least 2 seeds (stability and the seed axis need them).
"""
from __future__ import annotations

from typing import Any

from ..models import MODELS, build_model
from . import _selection_report as report
from ._selection_runs import AXES, population, run_model, run_name, run_stability
from .common import data_fields, train_config_from_fields
from .processes import run_in_processes
from .runner import StudyContext, StudyKind, register_study_kind
from .spec import Fields, SpecError

__all__ = ["SelectionStudy"]


def _axis_value(axis: str, value: Any, path: str) -> Any:
    """Check one hyperparameter value (SpecError naming ``path``)."""
    if axis in ("width", "depth") and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise SpecError(path, f"{axis} must be an int >= 1, got {value!r}")
    if axis == "train_size" and not (value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 2)):
        raise SpecError(path, f"train_size must be an int >= 2, got {value!r}")
    if axis == "weight_decay" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
        raise SpecError(path, f"weight_decay must be a number >= 0, got {value!r}")
    if axis == "label_noise" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1):
        raise SpecError(path, f"label_noise must be a number in [0, 1), got {value!r}")
    return float(value) if axis in ("weight_decay", "label_noise") else value


def population_fields(fields: Fields) -> dict[str, Any]:
    """The ``population`` table, validated (see the module docstring)."""
    f = fields.fields("population")
    axes_table, fixed_table = f.table_("axes"), f.table_("fixed", {})
    axes = {}
    for axis, values in axes_table.items():
        if axis not in AXES:
            raise SpecError(f"population.axes.{axis}", f"unknown axis; expected some of {list(AXES)}")
        if not isinstance(values, list) or len(set(map(repr, values))) < 2 or len(set(map(repr, values))) != len(values):
            raise SpecError(f"population.axes.{axis}", f"needs a list of >= 2 distinct values, got {values!r}")
        axes[axis] = [_axis_value(axis, v, f"population.axes.{axis}[{i}]") for i, v in enumerate(values)]
    if not axes:
        raise SpecError("population.axes", "vary at least one axis")
    fixed = {}
    for axis, value in fixed_table.items():
        if axis not in AXES or axis in axes:
            raise SpecError(f"population.fixed.{axis}", f"must be an axis of {list(AXES)} not in population.axes")
        fixed[axis] = _axis_value(axis, value, f"population.fixed.{axis}")
    centres = f.list("centres", item=dict, nonempty=True)
    for i, c in enumerate(centres):
        if set(c) != set(axes):
            raise SpecError(f"population.centres[{i}]", f"must give exactly the varied axes {sorted(axes)}, got {sorted(c)}")
        centres[i] = {a: _axis_value(a, v, f"population.centres[{i}].{a}") for a, v in c.items()}
    out = {"axes": axes, "fixed": fixed, "centres": centres, "random": f.int("random", 0, minimum=0),
           "sample_seed": f.int("sample_seed", 0, minimum=0)}
    f.finish()
    return out


def analysis_fields(fields: Fields, epochs: int) -> dict[str, Any]:
    """The ``analysis`` table, validated against the number of training epochs."""
    f = fields.fields("analysis", {})
    an = {"samples": f.int("samples", 500, minimum=20), "snapshots": f.list("snapshots", [epochs], item=int, nonempty=True),
          "nnk_k": f.int("nnk_k", 15, minimum=1), "graph_k": f.int("graph_k", 10, minimum=1), "channel_k": f.int("channel_k", 10, minimum=1),
          "sharpness_sigma": f.number("sharpness_sigma", 0.05, minimum=0.0), "sharpness_samples": f.int("sharpness_samples", 3, minimum=1),
          "patience": f.int("patience", 1, minimum=1), "n_boot": f.int("n_boot", 1000, minimum=10)}
    f.finish()
    snaps = an["snapshots"]
    if snaps != sorted(set(snaps)) or not 1 <= snaps[0] or snaps[-1] != epochs:
        raise SpecError("analysis.snapshots", f"must be increasing epochs in 1..{epochs} ending at the last one, got {snaps}")
    for key in ("nnk_k", "graph_k", "channel_k"):
        if an[key] >= an["samples"]:
            raise SpecError(f"analysis.{key}", f"must be smaller than analysis.samples={an['samples']}")
    if an["sharpness_sigma"] <= 0:
        raise SpecError("analysis.sharpness_sigma", "must be > 0")
    return an


@register_study_kind("selection")
class SelectionStudy(StudyKind):
    """A population of trained models; how well each measure predicts their test error (module docstring)."""

    def validate(self, spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
        if len(spec["seeds"]) < 2:
            raise SpecError("seeds", f"give >= 2 seeds (stability between seeds, seed axis), got {spec['seeds']}")
        data = data_fields(fields)
        if not data["options"].get("val_size"):
            raise SpecError("data.options.val_size", "required: the held-out validation split of the reference baseline")
        model = fields.str("model")
        if model not in MODELS:
            raise SpecError("model", f"unknown model {model!r}; registered models: {sorted(MODELS)}")
        train = fields.table_("train", {})
        for key in ("weight_decay", "seed"):
            if key in train:
                raise SpecError(f"train.{key}", "set by the population (weight_decay) or the study's seeds (seed); remove it here")
        config = train_config_from_fields(train, "train")
        if config.eval_every != 1:
            raise SpecError("train.eval_every", "must be 1: the test/validation curves and snapshots are taken every epoch")
        pop = population_fields(fields)
        an = analysis_fields(fields, config.epochs)
        configs = population(pop["centres"], pop["axes"], pop["fixed"], pop["random"], pop["sample_seed"])
        for c in configs:
            try:
                build_model(model, width=c["width"], depth=c["depth"])
            except (TypeError, ValueError) as err:
                raise SpecError("model", f"{model} with width={c['width']}, depth={c['depth']}: {err}") from err
            if c["train_size"] is not None and c["train_size"] < an["samples"]:
                raise SpecError("population", f"train_size {c['train_size']} < analysis.samples {an['samples']}")
        return {"data": data, "model": model, "train": train, "population": pop, "analysis": an}

    def run(self, spec: dict[str, Any], ctx: StudyContext) -> dict[str, Any]:
        pop = spec["population"]
        configs = population(pop["centres"], pop["axes"], pop["fixed"], pop["random"], pop["sample_seed"])
        jobs = [(spec, c, s, str(ctx.runs_dir)) for c in configs for s in spec["seeds"]]
        ctx.log(f"[{ctx.name}] {len(configs)} configurations x {len(spec['seeds'])} seeds = {len(jobs)} models")
        records = {}
        for args, rec in run_in_processes(run_model, jobs, ctx.workers, ctx.threads):
            records[rec["run"]] = rec
            last = rec["snapshots"][-1]
            ctx.log(f"  {rec['run']}: test error {100 * last['test_error']:.1f}% ({len(records)}/{len(jobs)})")
        groups = [[run_name(c, s) for s in spec["seeds"]] for c in configs]
        for _, result in run_in_processes(run_stability, [(g, str(ctx.runs_dir), spec["analysis"]["nnk_k"], ctx.threads) for g in groups],
                                          ctx.workers, ctx.threads):
            for run, by_epoch in result.items():
                for snap in records[run]["snapshots"]:
                    snap["stability"] = by_epoch[snap["epoch"]]
        ordered = [records[run_name(c, s)] for c in configs for s in spec["seeds"]]
        ctx.results_dir.mkdir(parents=True, exist_ok=True)
        rows = report.statistics(ordered, spec["analysis"]["patience"], spec["analysis"]["n_boot"])
        paths = report.write_tables(ordered, rows, ctx.results_dir, spec)
        paths += report.write_figures(ordered, rows, ctx.figures_dir)
        return {"rows": rows, "records": ordered, "paths": [str(p) for p in paths]}
