"""Spec helpers shared by the study kinds."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..capture import LatentCapture
from ..data import DATASETS
from ..engine import TrainConfig
from ..engine.train import OPTIMIZERS, PRECISIONS, SCHEDULERS
from .spec import Fields, SpecError

#: module name that stands for the raw inputs in ``layers``
INPUT = "input"


def data_fields(fields: Fields) -> dict[str, Any]:
    """The ``data`` table of a spec: ``{"name", "seed", "options"}`` (name among the registered data sets)."""
    f = fields.fields("data")
    out = {"name": f.str("name", choices=DATASETS), "seed": f.int("seed", 0, minimum=0), "options": f.table_("options", {})}
    f.finish()
    return out


_TRAIN_FIELDS = {
    "epochs": ("int", 1), "batch_size": ("int", 2), "lr": ("number", 0.0), "momentum": ("number", 0.0),
    "weight_decay": ("number", 0.0), "nesterov": ("bool", None), "milestones": ("numbers", None),
    "lr_gamma": ("number", 0.0), "device": ("str", None), "eval_every": ("int", 1),
    "eval_batch_size": ("int", 1), "limit_batches": ("int", 1), "drop_last": ("bool", None),
    "precision": ("choice", tuple(PRECISIONS)), "optimizer": ("choice", OPTIMIZERS),
    "betas": ("numbers", None), "scheduler": ("choice", SCHEDULERS), "warmup_epochs": ("int", 0),
    "clip_grad_norm": ("number", 0.0), "num_workers": ("int", 0), "pin_memory": ("bool", None),
}


def train_config_from_fields(table: dict[str, Any], path: str, seed: int = 0) -> TrainConfig:
    """A :class:`TrainConfig` from a spec table, every field type-checked with its path in errors."""
    f = Fields(table, path)
    if f.has("seed"):
        raise SpecError(f.sub("seed"), "the seed of a run comes from the study's `seeds`; remove it here")
    values: dict[str, Any] = {}
    for key in list(table):
        if key not in _TRAIN_FIELDS:
            continue
        kind, minimum = _TRAIN_FIELDS[key]
        if kind == "int":
            values[key] = f.int(key, minimum=minimum)
        elif kind == "number":
            values[key] = f.number(key, minimum=minimum)
        elif kind == "bool":
            values[key] = f.bool(key)
        elif kind == "str":
            values[key] = f.str(key)
        elif kind == "choice":
            values[key] = f.str(key, choices=minimum)
        else:
            values[key] = tuple(float(v) for v in f.list(key, item=(int, float)))
    f.finish()
    try:
        return TrainConfig(**values, seed=seed)
    except ValueError as err:
        raise SpecError(path, str(err)) from err


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
