"""Validation of a ``distill`` spec (fields: see :mod:`geomlat.studies.distill`), the loss of a term and
the objective of a method."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch
from torch import nn

from ...losses import LOSSES, build_loss, get_loss
from ...objectives import Distiller, Supervised
from ...losses.registry import DISTILL_CONSUMES
from ...models import MODELS
from ..common import build, data_fields, train_config_from_fields
from ..spec import Fields, SpecError, comparisons

__all__ = ["distill_losses", "build_term", "make_objective", "validate"]


def distill_losses() -> dict[str, type[nn.Module]]:
    """Loss names usable in `terms.*.loss`: the registered losses a Distiller takes (``consumes``)."""
    return {name: cls for name, cls in LOSSES.items() if cls.consumes in DISTILL_CONSUMES}


# sample shapes of the built-in data sets, for the dry-run forward pass of the validation
INPUT_SHAPES = {"digits": (1, 8, 8), "mnist1d": (1, 40), "cifar10": (3, 32, 32)}


def _model_fields(f: Fields, path: str) -> dict[str, Any]:
    model = f.str("model")
    if model not in MODELS:
        raise SpecError(f.sub("model"), f"unknown model {model!r}; registered models: {sorted(MODELS)}")
    return {"model": model, "kwargs": f.table_("kwargs", {})}


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


def build_term(term: dict[str, Any], *, teacher: nn.Module | None = None, student: nn.Module | None = None,
               pairs: list[tuple[str, str]] | None = None, x_example: torch.Tensor | None = None) -> nn.Module:
    """The loss module of a ``terms.*`` entry ``{loss, weight, kwargs}``, looked up in the loss registry
    (:func:`geomlat.losses.build_loss`). A loss built from the models (FitNet: projection widths from the
    layers ``pairs`` of ``teacher`` and ``student`` on ``x_example``, a small batch of inputs) needs them;
    the others are built from ``kwargs``. The studies' layers are CNN maps, (B, C, L) or (B, C, H, W), one
    vector per sample: a loss that takes ``reduce=`` gets ``"flatten"`` unless the spec says otherwise."""
    kwargs = dict(term["kwargs"])
    if "reduce" in inspect.signature(get_loss(term["loss"])).parameters:
        kwargs.setdefault("reduce", "flatten")
    return build_loss(term["loss"], teacher=teacher, student=student, pairs=pairs, example=x_example, **kwargs)


def make_objective(method: dict[str, Any], student: nn.Module, teacher: nn.Module, x_example: torch.Tensor) -> nn.Module:
    """The training objective of a method: :class:`Supervised` without terms, else a :class:`Distiller`.

    ``x_example`` (a small batch of inputs) is used to infer FitNet projection widths."""
    if not method["terms"]:
        return Supervised(student)
    terms = {name: (build_term(term, teacher=teacher, student=student, pairs=method["pairs"], x_example=x_example), term["weight"])
             for name, term in method["terms"].items()}
    return Distiller(student, teacher, terms, pairs=method["pairs"], task_weight=method["task_weight"])


def validate(spec: dict[str, Any], fields: Fields) -> dict[str, Any]:
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
    t_model, s_model = build(teacher, "teacher"), build(student, "student")

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
        losses = distill_losses()
        method["terms"] = _method_terms(mf.fields("terms", {}), losses)
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
        raise SpecError(af.sub("blocks"), "no blocks to analyze: set `analysis.blocks` or top-level `pairs`")
    _check_layers(analysis["blocks"], t_model, s_model, af.sub("blocks"))
    if analysis["k"] >= analysis["samples"]:
        raise SpecError(af.sub("k"), f"k={analysis['k']} must be smaller than analysis.samples={analysis['samples']}")
    for key in ("consistency", "variation", "graph_variants"):
        names = af.list(key, [m for m in default_methods(key) if m in methods], item=str)
        for i, m in enumerate(names):
            if m not in methods:
                raise SpecError(f"{af.sub(key)}[{i}]", f"unknown method {m!r}; declared methods: {sorted(methods)}")
        analysis[key] = names
    af.finish()

    out = {"data": data, "teacher": teacher, "student": student, "pairs": pairs, "methods": methods,
           "baseline": baseline, "comparisons": comparisons(fields, methods), "analysis": analysis}
    dry_run(out, t_model, s_model)
    return out


def _method_terms(terms_f: Fields, losses: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The checked ``terms`` table of a method: ``{name: {"loss", "weight", "kwargs"}}``."""
    terms = {}
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
                build_term(term)
            except (TypeError, ValueError) as err:
                raise SpecError(tf.sub("kwargs"), str(err)) from err
        tf.finish()
        terms[term_name] = term
    return terms


def default_methods(key: str) -> list[str]:
    return {"consistency": ["baseline", "rkd_d", "gkd"], "variation": ["baseline", "rkd_d", "gkd"],
            "graph_variants": ["gkd", "gkd_inter", "gkd_intra"]}[key]


def dry_run(spec: dict[str, Any], teacher: nn.Module, student: nn.Module) -> None:
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
