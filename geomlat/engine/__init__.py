"""Training engine: the training loop (optimizers and lr schedules of TrainConfig) with run records and exact resume,
evaluation, atomic IO. See :func:`geomlat.engine.train.train`; the objectives it trains (:class:`geomlat.objectives.Supervised`,
:class:`geomlat.objectives.Distiller`, ...) live in :mod:`geomlat.objectives`, which the engine does not import.

The public names are imported on first use (PEP 562): ``geomlat.engine.config_fields`` and
``geomlat.engine.locks`` (what a study checks before it starts) import no torch."""
import sys
import types

from .._lazy import lazy_dir, lazy_getattr

_LAZY = {
    **dict.fromkeys(("get_rank", "get_world_size", "is_main_process"), "..distributed"),
    **dict.fromkeys(("atomic_save", "atomic_write_bytes", "atomic_write_text", "load_checkpoint", "read_json",
                     "to_jsonable", "write_json"), ".io"),
    **dict.fromkeys(("TrainConfig", "checkpoint_state", "derive_seed", "evaluate_accuracy",
                     "load_trained_model", "lr_factor", "make_optimizer", "make_scheduler", "model_outputs", "predict",
                     "resolve_device", "train", "RunFolderMismatch"), ".train"),
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__dir__ = lazy_dir(_LAZY, globals())


class _Package(types.ModuleType):
    """Importing the submodule ``geomlat.engine.train`` binds it on the package; the public name ``train`` stays
    the function: a submodule bound under a public name is replaced by the attribute of that name."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
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
    "write_json",
]
