"""Validation of a ``toy`` spec (fields: see :mod:`geomlat.studies.toy`)."""
from __future__ import annotations

from typing import Any

from ..common import INPUT, built_model_fields, check_layer, data_fields, train_config_from_fields
from ..spec import Fields, SpecError

__all__ = ["validate"]


def validate(spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
    data = data_fields(fields)
    model_entry, model = built_model_fields(fields)
    train_table = fields.table_("train", {})
    train_config_from_fields(train_table, "train")
    gf = fields.fields("graph", {})
    graph = {"k": gf.int("k", 5, minimum=1), "kernel": gf.str("kernel", "auto", choices=("auto", "cosine", "rbf", "cosine_shifted")),
             "classes": gf.list("classes", [0, 1, 2, 3], item=int, nonempty=True),
             "per_class": gf.int("per_class", 5, minimum=1), "split": gf.str("split", "train", choices=("train", "test")),
             "draws": gf.int("draws", 50, minimum=1)}
    gf.finish()
    classes = graph["classes"]
    if len(set(classes)) != len(classes):
        raise SpecError("graph.classes", f"duplicate classes in {classes}")
    if any(c < 0 for c in classes):
        raise SpecError("graph.classes", f"classes must be >= 0, got {classes}")
    if len(classes) < 2:
        raise SpecError("graph.classes", "label variation needs at least 2 classes")
    n = len(classes) * graph["per_class"]
    if n < 3:
        raise SpecError("graph.per_class", f"{n} samples in all: the 2-D eigenmap needs at least 3")
    if graph["k"] >= n:
        raise SpecError("graph.k", f"k={graph['k']} must be smaller than the number of samples ({n})")
    middle = model.stage_names[(len(model.stage_names) - 1) // 2] if getattr(model, "stage_names", None) else None
    default_layers = [["input", INPUT]] + ([[f"middle ({middle})", middle]] if middle else []) + \
                     ([[f"penultimate ({model.feature_name})", model.feature_name]] if getattr(model, "feature_name", None) else [])
    layers = fields.list("layers", default_layers)
    out_layers = []
    for i, item in enumerate(layers):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            raise SpecError(f"layers[{i}]", f"expected [title, module name], got {item!r}")
        check_layer(item[1], model, f"layers[{i}][1]")
        out_layers.append(item)
    if not out_layers:
        raise SpecError("layers", "must not be empty")
    return {"data": data, "model": model_entry, "train": train_table, "graph": graph, "layers": out_layers}
