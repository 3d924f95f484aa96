"""Data sets as :class:`DatasetSplits`: ``load_dataset("digits" | "mnist1d" | "cifar10", data_dir, seed, **options)``.

Common options: ``train_size``, ``test_size`` (class-balanced random subsets given ``seed``; for digits
``test_size`` is the size of its test split, default 500), ``val_size`` (held out of the training set
into ``splits.val``), ``augment`` (bool: attach the data set's batch augmentation). Data-set specific:
mnist1d ``num_samples`` (5000), ``train_split`` (0.8). Everything is deterministic given ``seed``.

Value ranges: digits and CIFAR-10 in [0, 1] (no mean/std normalization: attacks and corruptions clip
to [0, 1]); MNIST-1D standardized (mean 0, std 1) by its own generator.
"""
from __future__ import annotations

from typing import Callable

from .._params import check_int
from ..registry import Registry
from .augment import CropFlipParams, RandomCropFlip, apply_crop_flip, draw_crop_flip
from .cifar import RestrictedUnpickler, load_cifar10_splits, read_batch, read_cifar10, restricted_load, write_cifar_folder
from .embedded import load_digits_splits, load_mnist1d_splits
from .splits import DatasetSplits, balanced_order

#: name -> loader ``loader(data_dir=, seed=, **options) -> DatasetSplits`` (``@DATASETS.register("name")`` adds one).
DATASETS: Registry[Callable[..., DatasetSplits]] = Registry("dataset")
DATASETS.register("digits", load_digits_splits)
DATASETS.register("mnist1d", load_mnist1d_splits)
DATASETS.register("cifar10", load_cifar10_splits)


def load_dataset(name: str, data_dir: str | None = None, seed: int = 0, **options) -> DatasetSplits:
    """Load data set ``name`` (see :data:`DATASETS`) with ``options`` passed to its loader.

    Raises:
        UnknownNameError: unknown name (a ``KeyError``; the message lists the registered ones).
        TypeError: an option the loader does not take (the message names the loader's options).
        FileNotFoundError / ValueError: missing or malformed files (CIFAR-10).
    """
    loader = DATASETS[name]
    check_int(seed, "seed", error=TypeError)
    import inspect

    accepted = [p for p in inspect.signature(loader).parameters if p not in ("data_dir", "seed")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"load_dataset({name!r}): unknown option(s) {unknown}; accepted: {accepted}")
    return loader(data_dir=data_dir, seed=seed, **options)


__all__ = [
    "DATASETS",
    "CropFlipParams",
    "DatasetSplits",
    "RandomCropFlip",
    "RestrictedUnpickler",
    "apply_crop_flip",
    "balanced_order",
    "draw_crop_flip",
    "load_cifar10_splits",
    "load_dataset",
    "load_digits_splits",
    "load_mnist1d_splits",
    "read_batch",
    "read_cifar10",
    "restricted_load",
    "write_cifar_folder",
]
