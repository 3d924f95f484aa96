"""Helpers shared by several study kinds: spec fields, models and layers, training runs, data subsets,
corrupted test sets and mCE. A study kind imports from here (and from ``runner``, ``spec``, ``tables``,
``figures``), never from another kind (tested by ``tests/studies/test_study_layout.py``)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ..capture import LatentCapture
from ..data import DATASETS, balanced_order, load_dataset
from ..engine import TrainConfig, train
from ..objectives import Supervised
from ..io import atomic_save, load_checkpoint
from ..engine.run_folder import load_trained_model
from ..models import MODELS, build_model, count_parameters
from ..robustness import APPROXIMATIONS, CORRUPTION_NAMES, NON_MONOTONE, SEVERITIES, corrupt, corruption_errors, to_uint8
from .runner import StudyContext
from .spec import Fields, SpecError, train_values

__all__ = ["INPUT", "IMAGE_SHAPES", "STORAGE_VERSION", "data_fields", "image_data_fields", "train_config_from_fields",
           "model_fields", "built_model_fields", "build", "check_layer", "load_splits", "train_model", "layer_features",
           "blas_threads", "subset", "corrupted_sets", "corruption_fields", "corruption_notes", "mce_pair",
           "seconds_per_epoch", "num_list"]

#: module name that stands for the raw inputs in a list of layers
INPUT = "input"
#: sample shapes of the image data sets (dry runs of the validation; corruptions need (C, H, W) images)
IMAGE_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}
#: Storage rule of the cached corrupted sets (2: CIFAR-10-C's truncation, ``to_uint8``; 1 rounded every set).
STORAGE_VERSION = 2


# ------------------------------------------------------------------------------------------- spec fields
def data_fields(fields: Fields) -> dict[str, Any]:
    """The ``data`` table of a spec: ``{"name", "seed", "options"}`` (name among the registered data sets)."""
    f = fields.fields("data")
    out = {"name": f.str("name", choices=DATASETS), "seed": f.int("seed", 0, minimum=0), "options": f.table_("options", {})}
    f.finish()
    return out


def image_data_fields(fields: Fields) -> dict[str, Any]:
    """``data`` table -> ``{name, seed, options}`` of an image data set (:data:`IMAGE_SHAPES`: corruptions)."""
    data = data_fields(fields)
    if data["name"] not in IMAGE_SHAPES:
        raise SpecError("data.name", f"corruptions need image data sets {sorted(IMAGE_SHAPES)}, got {data['name']!r}")
    return data


def train_config_from_fields(table: dict[str, Any], path: str, seed: int = 0) -> TrainConfig:
    """A :class:`TrainConfig` from a spec table, every field type-checked with its path in errors
    (:func:`geomlat.studies.spec.train_values`)."""
    values = train_values(table, path)
    try:
        return TrainConfig(**values, seed=seed)
    except ValueError as err:
        raise SpecError(path, str(err)) from err


def model_fields(fields: Fields, key: str = "model") -> dict[str, Any]:
    """``{model, kwargs}`` table of a classifier whose output width is set per method (no ``out_dim``)."""
    f = fields.fields(key)
    entry = {"model": f.str("model"), "kwargs": f.table_("kwargs", {})}
    f.finish()
    if entry["model"] not in MODELS:
        raise SpecError(f"{key}.model", f"unknown model {entry['model']!r}; registered models: {sorted(MODELS)}")
    if "out_dim" in entry["kwargs"]:
        raise SpecError(f"{key}.kwargs.out_dim", "set the output width per method, not on the model")
    return entry


def built_model_fields(fields: Fields, key: str = "model") -> tuple[dict[str, Any], nn.Module]:
    """``{model, kwargs}`` table, validated by building the model: returns ``(entry, model)``."""
    f = fields.fields(key)
    entry = {"model": f.str("model"), "kwargs": f.table_("kwargs", {})}
    f.finish()
    if entry["model"] not in MODELS:
        raise SpecError(f.sub("model"), f"unknown model {entry['model']!r}; registered models: {sorted(MODELS)}")
    try:
        model = build_model(entry["model"], **entry["kwargs"])
    except (TypeError, ValueError) as err:
        raise SpecError(f.sub("kwargs"), str(err)) from err
    return entry, model


def build(entry: dict[str, Any], path: str = "model", **extra) -> nn.Module:
    """The model of a ``{model, kwargs}`` entry (``extra`` kwargs added); SpecError at ``path.kwargs``."""
    try:
        return build_model(entry["model"], **{**entry["kwargs"], **extra})
    except (TypeError, ValueError) as err:
        raise SpecError(f"{path}.kwargs", str(err)) from err


def check_layer(name: str, model: nn.Module, path: str, allow_input: bool = True) -> None:
    """SpecError unless ``name`` is a module of ``model`` (or ``"input"``)."""
    if allow_input and name == INPUT:
        return
    if name not in dict(model.named_modules()) or name == "":
        raise SpecError(path, f"layer {name!r} is not a module of {type(model).__name__}; stage names: "
                              f"{getattr(model, 'stage_names', [])}, features: {getattr(model, 'feature_name', None)!r}"
                              + (f", or {INPUT!r} for the raw inputs" if allow_input else ""))


def num_list(f: Fields, key: str, default: list) -> list[float]:
    """A list of finite numbers > 0 at ``key``."""
    values = f.list(key, default, item=(int, float))
    for i, v in enumerate(values):
        if not (math.isfinite(v) and v > 0):
            raise SpecError(f"{f.sub(key)}[{i}]", f"must be a finite number > 0, got {v}")
    return [float(v) for v in values]


# ------------------------------------------------------------------------------------------- data and runs
def load_splits(data: dict[str, Any], data_dir: str | None):
    """The data set of a validated ``data`` table; bad ``options`` -> SpecError at ``data.options``."""
    try:
        return load_dataset(data["name"], data_dir, seed=data["seed"], **data["options"])
    except TypeError as err:
        raise SpecError("data.options", str(err)) from err


def train_model(entry: dict[str, Any], config: TrainConfig, splits, ctx: StudyContext, run: str, **train_kwargs) -> tuple[nn.Module, dict]:
    """Build ``entry``'s model under ``torch.manual_seed(config.seed)``, train it with cross-entropy in
    ``ctx.runs_dir / run`` (skipped when finished, resumed when interrupted); returns ``(model in eval
    mode, final metrics)``."""
    torch.manual_seed(config.seed)
    model = build_model(entry["model"], **{"num_classes": splits.num_classes, **entry["kwargs"]})
    record = {"study": ctx.name, "profile": ctx.profile, "model": entry["model"], "kwargs": entry["kwargs"]}
    final = train(Supervised(model), splits, config, ctx.runs_dir / run, progress=ctx.progress, record=record, **train_kwargs)
    load_trained_model(ctx.runs_dir / run, model)  # the final weights (also when the run was skipped)
    ctx.log(f"  {run}: {count_parameters(model):,} parameters, test error {100 * final['test_error']:.2f}%")
    return model.eval(), final


@torch.no_grad()
def layer_features(model: nn.Module, x: torch.Tensor, layers: list[str], batch_size: int = 512) -> dict[str, torch.Tensor]:
    """``{layer: (N, ...) features}`` of ``model`` (eval mode) on inputs ``x`` (N, ...); ``"input"`` is ``x``."""
    modules = [n for n in dict.fromkeys(layers) if n != INPUT]
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
    model.eval()
    for start in range(0, len(x), batch_size):
        with LatentCapture(model, modules, detach=True) as captured:
            model(x[start : start + batch_size])
        for n in modules:
            parts[n].append(captured[n].cpu())
    out = {n: torch.cat(v) for n, v in parts.items()}
    return {n: (x if n == INPUT else out[n]) for n in layers}


def blas_threads(n: int | None):
    """Context manager limiting NumPy/SciPy BLAS threads (PyGSP's eigendecompositions) to ``n``: on a
    loaded machine an oversubscribed OpenBLAS makes a 500 x 500 ``eigh`` 10-50x slower."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n or 1)


def subset(dataset, samples: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``samples`` of a seeded class-balanced order of ``dataset`` (all when None): (x, y)."""
    x, y = dataset.tensors[0], dataset.tensors[1]
    if samples is None or samples >= len(y):
        return x, y
    order = balanced_order(y.numpy(), np.random.default_rng([seed, 7]))[:samples]
    idx = torch.from_numpy(np.sort(order))
    return x[idx], y[idx]


def seconds_per_epoch(run_dir: Path) -> float:
    """Median training seconds per epoch of a run (from ``metrics.jsonl``; evaluation time excluded)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(np.median([line["seconds"] for line in lines]))


# ------------------------------------------------------------------------------------------- corruptions
def corruption_fields(fields: Fields) -> dict[str, Any]:
    """The ``corruptions`` table: ``{names, severities, samples, seed}``."""
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


def corruption_notes(names: list[str]) -> str:
    """Table notes naming the approximated and the non-monotone corruptions among ``names``."""
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
