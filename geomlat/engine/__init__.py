"""Training engine: the training loop with run records and exact resume (:func:`geomlat.engine.train`), in parts:

- :mod:`geomlat.engine.config`: :class:`TrainConfig` and its validation, the optimizer and lr-schedule
  factories (torch-free at import: study specs check their ``train`` tables with it before torch loads);
- :mod:`geomlat.engine.precision`: :class:`~geomlat.engine.precision.Precision` (autocast, grad scaler, step);
- :mod:`geomlat.engine.step`: one optimization step and the deferred checks of its losses;
- :mod:`geomlat.engine.batches`: the seeded batches of an epoch; :mod:`geomlat.engine.devices`: the device;
- :mod:`geomlat.engine.evaluation`: :func:`model_outputs`, :func:`predict`, :func:`evaluate_accuracy`;
- :mod:`geomlat.engine.run_folder`: the files of a run folder, resume, checkpoints and run fingerprints;
- :mod:`geomlat.engine.loop`: :func:`train`, the epoch loop.

Atomic file writes are :mod:`geomlat.io` (re-exported here), rank-0 rules :mod:`geomlat.distributed`.
The public names are imported on first use (PEP 562).
"""
from .._lazy import lazy_dir, lazy_getattr

_LAZY = {
    **dict.fromkeys(("get_rank", "get_world_size", "is_main_process"), "..distributed"),
    **dict.fromkeys(("atomic_save", "atomic_write_bytes", "atomic_write_text", "load_checkpoint", "read_json",
                     "to_jsonable", "write_json"), "..io"),
    **dict.fromkeys(("TrainConfig", "lr_factor", "make_optimizer", "make_scheduler"), ".config"),
    **dict.fromkeys(("evaluate_accuracy", "model_outputs", "predict"), ".evaluation"),
    **dict.fromkeys(("checkpoint_state", "load_trained_model", "RunFolderMismatch"), ".run_folder"),
    "derive_seed": ".batches",
    "resolve_device": ".devices",
    "Precision": ".precision",
    "train_step": ".step",
    "train": ".loop",
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__dir__ = lazy_dir(_LAZY, globals())

__all__ = [
    "Precision",
    "RunFolderMismatch",
    "TrainConfig",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "checkpoint_state",
    "derive_seed",
    "evaluate_accuracy",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "load_checkpoint",
    "load_trained_model",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "model_outputs",
    "predict",
    "read_json",
    "resolve_device",
    "to_jsonable",
    "train",
    "train_step",
    "write_json",
]
