"""Training engine: objectives, the SGD training loop with run records and exact resume, evaluation,
atomic IO. See :func:`geomlat.engine.train.train`."""
from ..distributed import get_rank, get_world_size, is_main_process
from .io import atomic_save, atomic_write_bytes, atomic_write_text, load_checkpoint, read_json, to_jsonable, write_json
from .train import (
    Supervised,
    TrainConfig,
    derive_seed,
    evaluate_accuracy,
    load_trained_model,
    model_outputs,
    predict,
    resolve_device,
    train,
)

__all__ = [
    "Supervised",
    "TrainConfig",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "derive_seed",
    "evaluate_accuracy",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "load_checkpoint",
    "load_trained_model",
    "model_outputs",
    "predict",
    "read_json",
    "resolve_device",
    "to_jsonable",
    "train",
    "write_json",
]
