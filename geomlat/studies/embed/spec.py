"""Validation of an ``embed`` spec (fields: see :mod:`geomlat.studies.embed`) and the objective of a method."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...losses.embedding import LabelVariationLoss
from ...objectives import BottleneckCrossEntropy, LabelVariationObjective, Supervised
from ..common import IMAGE_SHAPES, build, corruption_fields, image_data_fields, model_fields, train_config_from_fields
from ..spec import Fields, SpecError, comparisons

__all__ = ["LOSSES", "CLASSIFIERS", "make_objective", "validate"]


LOSSES = ("cross_entropy", "label_variation")
CLASSIFIERS = ("argmax", "knn", "ncm", "logreg")


def make_objective(method: dict[str, Any], model: nn.Module, num_classes: int) -> nn.Module:
    if method["loss"] == "label_variation":
        return LabelVariationObjective(model, LabelVariationLoss(**method["kwargs"]))
    if method["out_dim"] == num_classes:
        return Supervised(model)
    return BottleneckCrossEntropy(model, num_classes)


def validate(spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
    data = image_data_fields(fields)
    model = model_fields(fields)
    common = fields.table_("train", {})
    train_config_from_fields(common, "train")
    num_classes = int(model["kwargs"].get("num_classes", 10))
    methods_f = fields.fields("methods")
    if not methods_f.table:
        raise SpecError("methods", "declare at least one method")
    x = torch.rand((8, *IMAGE_SHAPES[data["name"]]), generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 2
    methods = {}
    for name in methods_f.table:
        mf = methods_f.fields(name)
        m = {"label": mf.str("label", name), "loss": mf.str("loss", choices=LOSSES),
             "out_dim": mf.int("out_dim", num_classes, minimum=1), "kwargs": mf.table_("kwargs", {})}
        if m["loss"] == "cross_entropy" and m["kwargs"]:
            raise SpecError(mf.sub("kwargs"), "cross-entropy takes no kwargs")
        own = mf.table_("train", {})
        train_config_from_fields(own, mf.sub("train"))
        m["train"] = train_config_from_fields({**common, **own}, mf.sub("train")).to_dict()
        mf.finish()
        try:
            objective = make_objective(m, build(model, out_dim=m["out_dim"]), num_classes)
            objective.train()
            _, losses = objective(x, y)
            sum(losses.values()).backward()
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise SpecError(f"methods.{name}", f"the objective fails on a dummy batch: {err}") from err
        methods[name] = m
    classifiers = fields.list("classifiers", list(CLASSIFIERS), item=str, nonempty=True)
    for i, c in enumerate(classifiers):
        if c not in CLASSIFIERS:
            raise SpecError(f"classifiers[{i}]", f"unknown classifier {c!r}; expected one of {list(CLASSIFIERS)}")
    baseline = fields.str("baseline", "ce")
    if baseline not in methods:
        raise SpecError("baseline", f"method {baseline!r} is not declared in `methods` ({sorted(methods)})")
    if methods[baseline]["loss"] != "cross_entropy":
        raise SpecError("baseline", "the baseline of the relative mCE must be a cross-entropy method")
    knn_k = fields.int("knn_k", 5, minimum=1)
    ff = fields.fields("figure", {})
    default_fig = [n for n, m in methods.items() if m["out_dim"] == 2]
    figure = {"methods": ff.list("methods", default_fig, item=str), "samples": ff.int("samples", 1000, minimum=10)}
    epochs = ff.list("epochs", [0], item=int)
    for i, n in enumerate(figure["methods"]):
        if n not in methods:
            raise SpecError(f"figure.methods[{i}]", f"unknown method {n!r}; declared: {sorted(methods)}")
        if methods[n]["out_dim"] != 2:
            raise SpecError(f"figure.methods[{i}]", f"method {n!r} has out_dim {methods[n]['out_dim']}; the figure draws 2-D embeddings")
    for i, e in enumerate(epochs):
        max_epochs = min((methods[n]["train"]["epochs"] for n in figure["methods"]), default=e)
        if not 0 <= e <= max_epochs:
            raise SpecError(f"figure.epochs[{i}]", f"epoch {e} outside 0..{max_epochs}")
    figure["epochs"] = sorted(set(epochs))
    ff.finish()
    return {"data": data, "model": model, "methods": methods, "classifiers": classifiers, "knn_k": knn_k,
            "baseline": baseline, "comparisons": comparisons(fields, methods), "figure": figure,
            "corruptions": corruption_fields(fields)}
