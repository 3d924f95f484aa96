"""Evaluation of a trained model over a dataset, in eval mode and in order: :func:`model_outputs`,
:func:`predict`, :func:`evaluate_accuracy`.

The dataset is a TensorDataset (sliced in memory) or any map-style dataset of ``(x, y)`` pairs or mappings
holding the labels under ``"labels"``, collated by its own ``collate_fn`` attribute when it has one
(:mod:`geomlat.engine.batches`); the model's inputs are what remains of a mapping (``model(**inputs)``), or ``x``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..batch import call_model, to_device
from ..capture import select_logits
from .batches import dataset_batches
from .devices import model_device, resolve_device

__all__ = ["model_outputs", "predict", "evaluate_accuracy"]


@torch.no_grad()
def _outputs_and_labels(model: nn.Module, dataset: Dataset, batch_size: int,
                        device: str | torch.device | None) -> tuple[Tensor, Tensor]:
    """``(outputs (N, C) float on CPU, labels (N,) on CPU)`` of ``model`` in eval mode over ``dataset``, in order
    (one pass: a dataset's transforms run once). The model's train/eval mode is restored afterwards."""
    device = model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    outs, labels = [], []
    try:
        for x, y in dataset_batches(dataset, batch_size):
            outs.append(select_logits(call_model(model, to_device(x, device))).float().cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("cannot evaluate on an empty dataset")
    return torch.cat(outs), torch.cat(labels)


def model_outputs(model: nn.Module, dataset: Dataset, batch_size: int = 512, device: str | torch.device | None = None) -> Tensor:
    """Outputs of ``model`` in eval mode over ``dataset`` (``(x, y)`` pairs or mappings with ``"labels"``, see
    the module docstring), in order: (N, C) float tensor on CPU. The model's train/eval mode is restored
    afterwards. A tuple/dict/``ModelOutput`` output is reduced by :func:`geomlat.select_logits`'s default
    rule (``.logits`` / ``["logits"]`` / first Tensor)."""
    return _outputs_and_labels(model, dataset, batch_size, device)[0]


def predict(model: nn.Module, dataset: Dataset, batch_size: int = 512, device: str | torch.device | None = None) -> Tensor:
    """Predicted classes ``argmax model(x)`` over ``dataset``: (N,) int64 tensor on CPU."""
    return model_outputs(model, dataset, batch_size, device).argmax(dim=1)


def evaluate_accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 512, device: str | torch.device | None = None) -> float:
    """Fraction of samples of ``dataset`` whose predicted class ``argmax model(x)`` equals the label (one pass
    over the dataset: the labels come with the batches)."""
    outputs, labels = _outputs_and_labels(model, dataset, batch_size, device)
    return float((outputs.argmax(dim=1) == labels).double().mean())

