"""The fields of :class:`geomlat.engine.TrainConfig` described without torch: study specs check their ``train``
tables with it before the study kind (and torch) is imported, so a typo answers at once.

``TRAIN_FIELDS`` maps each field a spec may set (all but ``seed``, which comes from the study's seeds) to
``(kind, argument)``: ``("int", minimum)``, ``("number", minimum)``, ``("bool", None)``, ``("str", None)``,
``("choice", allowed values)`` or ``("numbers", None)`` (a list of numbers). TrainConfig itself checks the
values further (ranges, orderings); ``tests/engine`` checks that the two list the same fields.
"""
from __future__ import annotations

__all__ = ["OPTIMIZERS", "SCHEDULERS", "PRECISION_NAMES", "TRAIN_FIELDS"]

#: ``TrainConfig.optimizer`` values.
OPTIMIZERS = ("sgd", "adamw")
#: ``TrainConfig.scheduler`` values (the lr per epoch; see :func:`geomlat.engine.train.lr_factor`).
SCHEDULERS = ("multistep", "cosine", "constant")
#: ``TrainConfig.precision`` values (Lightning's names).
PRECISION_NAMES = ("32", "bf16-mixed", "16-mixed")

TRAIN_FIELDS: dict[str, tuple[str, object]] = {
    "epochs": ("int", 1), "batch_size": ("int", 2), "lr": ("number", 0.0), "momentum": ("number", 0.0),
    "weight_decay": ("number", 0.0), "nesterov": ("bool", None), "milestones": ("numbers", None),
    "lr_gamma": ("number", 0.0), "device": ("str", None), "eval_every": ("int", 1),
    "eval_batch_size": ("int", 1), "limit_batches": ("int", 1), "drop_last": ("bool", None),
    "precision": ("choice", PRECISION_NAMES), "optimizer": ("choice", OPTIMIZERS),
    "betas": ("numbers", None), "scheduler": ("choice", SCHEDULERS), "warmup_epochs": ("int", 0),
    "clip_grad_norm": ("number", 0.0), "num_workers": ("int", 0), "pin_memory": ("bool", None),
    "compile": ("bool", None),
}
