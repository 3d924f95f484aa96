"""Batches of the engine: the seeded index batches of an epoch (:func:`epoch_batches`), the training batches
of a map-style dataset read through a ``DataLoader`` at those indices (:func:`loader_batches`) and the
ordered batches of an evaluated dataset (:func:`dataset_batches`).

Items are ``(x, y)`` pairs or mappings holding the labels under ``"labels"`` (Hugging Face's convention),
collated by the dataset's own ``collate_fn`` attribute when it has one (e.g. a ``DataCollatorWithPadding``),
else by torch's ``default_collate``. Every random draw comes from a generator seeded by ``(seed, epoch)``
(:func:`derive_seed`): an epoch is reproducible, hence resumable.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..batch import Inputs, split_labels
from .config import TrainConfig

__all__ = ["derive_seed", "collate_fn", "inputs_and_labels", "dataset_batches", "epoch_batches", "loader_batches"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixing integers with NumPy's SeedSequence (well spread, no collisions of (seed, epoch))."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0]) >> 1


def collate_fn(dataset: Dataset) -> Callable | None:
    """The dataset's own ``collate_fn`` attribute (e.g. a ``DataCollatorWithPadding``), else None (torch's
    ``default_collate``)."""
    collate = getattr(dataset, "collate_fn", None)
    if collate is not None and not callable(collate):
        raise TypeError(f"{type(dataset).__name__}.collate_fn must be callable, got {type(collate).__name__}")
    return collate


def inputs_and_labels(batch, what: str) -> tuple[Inputs, Tensor]:
    """``(inputs, labels tensor)`` of one collated batch: an ``(x, y)`` pair or a mapping with ``"labels"``."""
    if not isinstance(batch, (tuple, list, Mapping)):
        raise ValueError(f"{what} must yield (x, y) samples or mappings with a 'labels' key, got a batch of type "
                         f"{type(batch).__name__}")
    if isinstance(batch, (tuple, list)) and len(batch) > 2:  # (x, y, extra...): x and y, as before
        batch = batch[:2]
    try:
        inputs, labels = split_labels(batch)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{what} must yield (x, y) samples or mappings with a 'labels' key: {err}") from None
    return inputs, torch.as_tensor(labels)


def dataset_batches(dataset: Dataset, batch_size: int) -> Iterator[tuple[Inputs, Tensor]]:
    """Yield ``(inputs, labels)`` batches in order; TensorDatasets are sliced directly (no DataLoader
    overhead), other datasets go through a DataLoader with the dataset's ``collate_fn`` (see the module
    docstring)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        x, y = tensors[0], tensors[1]
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
    else:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn(dataset)):
            yield inputs_and_labels(batch, "the evaluated dataset")


def epoch_batches(n: int, config: TrainConfig, epoch: int, world: int = 1) -> list[Tensor]:
    """Index batches of epoch ``epoch`` (0-based): a permutation drawn from a generator seeded by (seed, epoch).

    The same global batches on every rank; a last batch with fewer than 2 samples per rank is dropped."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, 0))
    batches = list(torch.randperm(n, generator=generator).split(config.batch_size))
    if batches and (len(batches[-1]) < 2 * world or (config.drop_last and len(batches[-1]) < config.batch_size)):
        batches.pop()
    if config.limit_batches is not None:
        batches = batches[: config.limit_batches]
    if not batches:
        raise ValueError(f"the training set ({n} samples) gives no batch of batch_size={config.batch_size}")
    return batches


def _seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: NumPy's and ``random``'s seeds from the worker's torch seed (itself drawn
    from the epoch's seeded generator), so that transforms using them are reproducible."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader_batches(dataset: Dataset, batches: list[Tensor], config: TrainConfig, epoch: int,
                   device: torch.device) -> Iterator[tuple[Inputs, Tensor]]:
    """``(inputs, labels)`` batches of a map-style ``dataset`` (items ``(x, y)`` or mappings with ``"labels"``,
    collated by the dataset's ``collate_fn`` if it has one) at the index batches ``batches`` through a
    ``DataLoader`` (``num_workers``, ``pin_memory``; workers seeded from ``(seed, epoch)``: reproducible and
    resumable)."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, epoch, 3))
    loader = DataLoader(dataset, batch_sampler=[idx.tolist() for idx in batches], num_workers=config.num_workers,
                        pin_memory=config.pin_memory and device.type == "cuda", generator=generator,
                        worker_init_fn=_seed_worker if config.num_workers > 0 else None,
                        collate_fn=collate_fn(dataset))
    for item in loader:
        if isinstance(item, (tuple, list)) and len(item) < 2:
            raise ValueError(f"the training set must yield (x, y) samples, got a batch of type {type(item).__name__}")
        yield inputs_and_labels(item, "the training set")

