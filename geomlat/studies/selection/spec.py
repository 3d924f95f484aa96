"""Validation of a ``selection`` spec (see the package docstring for the fields)."""
from __future__ import annotations

from typing import Any

from ...models import MODELS, build_model
from ..common import data_fields, train_config_from_fields
from ..spec import Fields, SpecError
from .run import AXES, population

__all__ = ["validate", "population_fields", "analysis_fields"]


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
    centers = f.list("centers", item=dict, nonempty=True)
    for i, c in enumerate(centers):
        if set(c) != set(axes):
            raise SpecError(f"population.centers[{i}]", f"must give exactly the varied axes {sorted(axes)}, got {sorted(c)}")
        centers[i] = {a: _axis_value(a, v, f"population.centers[{i}].{a}") for a, v in c.items()}
    out = {"axes": axes, "fixed": fixed, "centers": centers, "random": f.int("random", 0, minimum=0),
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



def validate(spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
    if fields.has("interpolation"):  # the interpolating regime (issue 21): its own table, see .interpolation
        from .interpolation import validate as validate_interpolation

        return validate_interpolation(spec, fields)
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
    configs = population(pop["centers"], pop["axes"], pop["fixed"], pop["random"], pop["sample_seed"])
    for c in configs:
        try:
            build_model(model, width=c["width"], depth=c["depth"])
        except (TypeError, ValueError) as err:
            raise SpecError("model", f"{model} with width={c['width']}, depth={c['depth']}: {err}") from err
        if c["train_size"] is not None and c["train_size"] < an["samples"]:
            raise SpecError("population", f"train_size {c['train_size']} < analysis.samples {an['samples']}")
    return {"data": data, "model": model, "train": train, "population": pop, "analysis": an}
