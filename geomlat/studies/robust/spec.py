"""Validation of a ``robust`` spec (fields: see :mod:`geomlat.studies.robust`) and the objective of a method."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...objectives import PGDTraining, SmoothnessObjective, Supervised
from ...losses.regularizers import SmoothnessRegularizer
from ...robustness import ParsevalRetraction
from ..common import IMAGE_SHAPES, build, corruption_fields, image_data_fields, model_fields, num_list, train_config_from_fields
from ..spec import Fields, SpecError, comparisons

__all__ = ["OBJECTIVES", "make_objective", "validate"]


OBJECTIVES = ("supervised", "smoothness", "pgd")


def make_objective(method: dict[str, Any], model: nn.Module, seed: int) -> nn.Module:
    """The training objective of a method of the ``robust`` kind."""
    if method["objective"] == "supervised":
        return Supervised(model)
    if method["objective"] == "smoothness":
        layers = None if method["layers"] == "relu" else method["layers"]
        return SmoothnessObjective(model, layers, SmoothnessRegularizer(**method["kwargs"]))
    return PGDTraining(model, seed=seed, **method["kwargs"])


def validate(spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
    data = image_data_fields(fields)
    model = model_fields(fields)
    common = fields.table_("train", {})
    train_config_from_fields(common, "train")
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
        train_config_from_fields(own, mf.sub("train"))
        m["train"] = train_config_from_fields({**common, **own}, mf.sub("train")).to_dict()
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
               "fgsm_eps": num_list(af, "fgsm_eps", []),
               "pgd_eps": af.number("pgd_eps", 8 / 255, minimum=0.0), "pgd_alpha": af.number("pgd_alpha", 2 / 255, minimum=1e-12),
               "pgd_steps": af.int("pgd_steps", 10, minimum=1), "batch_size": af.int("batch_size", 256, minimum=1)}
    af.finish()
    return {"data": data, "model": model, "methods": methods, "baseline": baseline,
            "comparisons": comparisons(fields, methods), "attacks": attacks, "corruptions": corruption_fields(fields)}
