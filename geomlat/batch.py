"""Batches as researchers hold them: a tensor, a tuple of tensors, or a mapping of named inputs (a Hugging
Face tokenizer's ``BatchEncoding``, ``{"input_ids", "attention_mask", ...}``).

Objectives and the training engine go through these helpers, so every model is called the way its inputs
say: ``model(x)``, ``model(*x)`` or ``model(**x)``.

Example:
    >>> import torch
    >>> batch = {"input_ids": torch.ones(4, 7, dtype=torch.long), "labels": torch.arange(4)}
    >>> inputs, labels = split_labels(batch)
    >>> sorted(inputs), labels.tolist(), batch_size(inputs)
    (['input_ids'], [0, 1, 2, 3], 4)
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import Tensor, nn

#: a model's inputs for one batch: a tensor, a tuple/list of tensors (``model(*x)``) or a mapping (``model(**x)``)
Inputs = Union[Tensor, tuple, list, Mapping[str, Any]]

#: the label keys of a mapping batch (Hugging Face's ``labels`` first)
LABEL_KEYS = ("labels", "label")


def call_model(model: nn.Module, inputs: Inputs):
    """``model(**inputs)`` for a mapping, ``model(*inputs)`` for a tuple/list, ``model(inputs)`` otherwise."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def first_tensor(inputs: Inputs) -> Tensor:
    """The tensor that carries the batch dimension: ``input_ids`` (or ``inputs_embeds``, ``pixel_values``,
    else the first tensor value) of a mapping, the first tensor of a tuple, the tensor itself."""
    if isinstance(inputs, Tensor):
        return inputs
    if isinstance(inputs, Mapping):
        for key in ("input_ids", "inputs_embeds", "pixel_values"):
            if isinstance(inputs.get(key), Tensor):
                return inputs[key]
        values = list(inputs.values())
    elif isinstance(inputs, (tuple, list)):
        values = list(inputs)
    else:
        raise TypeError(f"a batch of inputs must be a Tensor, a tuple/list or a mapping, got {type(inputs).__name__}")
    for value in values:
        if isinstance(value, Tensor):
            return value
    raise TypeError(f"the batch of inputs ({type(inputs).__name__}) holds no tensor")


def batch_size(inputs: Inputs) -> int:
    """B, the size of dimension 0 of :func:`first_tensor`."""
    return int(first_tensor(inputs).shape[0])


def attention_mask_of(inputs: Inputs) -> Tensor | None:
    """The batch's ``attention_mask`` (B, T) if the inputs are a mapping that holds one, else ``None``."""
    if isinstance(inputs, Mapping):
        mask = inputs.get("attention_mask")
        return mask if isinstance(mask, Tensor) else None
    return None


def map_tensors(inputs: Inputs, fn):
    """``inputs`` with ``fn`` applied to every tensor (same container type; a mapping becomes a ``dict``,
    which ``model(**inputs)`` takes as a ``BatchEncoding``); non-tensor values are kept."""
    if isinstance(inputs, Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {key: map_tensors(value, fn) for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(map_tensors(value, fn) for value in inputs)
    return inputs


def to_device(inputs: Inputs, device: torch.device | str, non_blocking: bool = False) -> Inputs:
    """Every tensor of ``inputs`` moved to ``device``."""
    return map_tensors(inputs, lambda t: t.to(device, non_blocking=non_blocking))


def index_batch(inputs: Inputs, index) -> Inputs:
    """Rows ``index`` (a slice, an index tensor or a boolean mask over B) of every tensor of ``inputs``."""
    return map_tensors(inputs, lambda t: t[index])


def split_labels(batch) -> tuple[Inputs, Tensor]:
    """``(inputs, labels)`` of one batch: an ``(x, y)`` pair, or a mapping holding the labels under
    ``"labels"`` (Hugging Face's convention) or ``"label"`` and the model's inputs under the other keys."""
    if isinstance(batch, Mapping):
        for key in LABEL_KEYS:
            if key in batch:
                return {k: v for k, v in batch.items() if k != key}, batch[key]
        raise KeyError(f"a mapping batch must hold its labels under 'labels' (Hugging Face's convention), "
                       f"got keys {sorted(batch)}")
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(f"a batch must be an (inputs, labels) pair or a mapping with a 'labels' key, got "
                    f"{type(batch).__name__}{f' of length {len(batch)}' if isinstance(batch, (tuple, list)) else ''}")
