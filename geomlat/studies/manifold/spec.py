"""Validation of a ``manifold`` spec (fields: see :mod:`geomlat.studies.manifold`)."""
from __future__ import annotations

from typing import Any

from torch import nn

from ...kernels import kernel_names
from ..common import INPUT, built_model_fields, check_layer, data_fields, train_config_from_fields
from ..spec import Fields, SpecError

__all__ = ["validate"]


def _layers_field(fields: Fields, key: str, model: nn.Module, default: list[str], allow_input: bool) -> list[str]:
    names = fields.list(key, default, item=str, nonempty=True)
    for i, n in enumerate(names):
        check_layer(n, model, f"{fields.sub(key)}[{i}]", allow_input=allow_input)
    if len(set(names)) != len(names):
        raise SpecError(fields.sub(key), f"duplicate layers in {names}")
    return names


def validate(spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
    if len(spec["seeds"]) != 1:
        raise SpecError("seeds", f"the manifold study follows one training run: give exactly one seed, got {spec['seeds']}")
    data = data_fields(fields)
    model_entry, model = built_model_fields(fields)
    train_table = fields.table_("train", {})
    config = train_config_from_fields(train_table, "train")
    if config.eval_every != 1:
        raise SpecError("train.eval_every", "must be 1: the per-epoch snapshots are taken at each evaluation")
    stages = list(getattr(model, "stage_names", []))
    feature = [model.feature_name] if getattr(model, "feature_name", None) else []
    layers = _layers_field(fields, "layers", model, [INPUT, *stages, *feature], allow_input=True)

    af = fields.fields("analysis", {})
    analysis = {"samples": af.int("samples", 500, minimum=10), "nnk_k": af.int("nnk_k", 15, minimum=1),
                "graph_k": af.int("graph_k", 10, minimum=1), "kernel": af.str("kernel", "cosine", choices=kernel_names()),
                "every": af.int("every", 1, minimum=1)}
    analysis["spectrum_epochs"] = af.list("spectrum_epochs", [1, config.epochs], item=int, nonempty=True)
    af.finish()
    for key in ("nnk_k", "graph_k"):
        if analysis[key] >= analysis["samples"]:
            raise SpecError(f"analysis.{key}", f"must be smaller than analysis.samples={analysis['samples']}")
    for i, e in enumerate(analysis["spectrum_epochs"]):
        if not 1 <= e <= config.epochs:
            raise SpecError(f"analysis.spectrum_epochs[{i}]", f"epoch {e} is outside 1..{config.epochs}")

    cf = fields.fields("comparison")
    cmp_entry, cmp_model = built_model_fields(cf, "model")
    c_stages = list(getattr(cmp_model, "stage_names", []))
    c_feature = [cmp_model.feature_name] if getattr(cmp_model, "feature_name", None) else []
    comparison = {"model": cmp_entry, "samples": cf.int("samples", 500, minimum=4), "knn_k": cf.int("knn_k", 10, minimum=1),
                  "lgg_k": cf.int("lgg_k", 10, minimum=1),
                  "layers_a": _layers_field(cf, "layers_a", model, [*stages, *feature], allow_input=False),
                  "layers_b": _layers_field(cf, "layers_b", cmp_model, [*c_stages, *c_feature], allow_input=False)}
    cf.finish()
    for key in ("knn_k", "lgg_k"):
        if comparison[key] is not None and comparison[key] >= comparison["samples"]:
            raise SpecError(f"comparison.{key}", f"must be smaller than comparison.samples={comparison['samples']}")
    return {"data": data, "model": model_entry, "train": train_table, "layers": layers, "analysis": analysis,
            "comparison": comparison}
