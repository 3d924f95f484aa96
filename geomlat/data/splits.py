"""The :class:`DatasetSplits` container and deterministic, class-balanced sub-sampling shared by the loaders."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset
from .._params import check_int


# distinct random streams per use of the seed, so that e.g. the validation split does not depend on test_size
STREAM_SPLIT, STREAM_VAL, STREAM_TRAIN, STREAM_TEST = 1, 2, 3, 4


@dataclass
class DatasetSplits:
    """A data set ready for training.

    Attributes:
        train, test: ``TensorDataset(x float32 (N, *input_shape), y int64 (N,))``.
        num_classes: labels are ``0 .. num_classes - 1``.
        input_shape: shape of one sample, e.g. ``(3, 32, 32)``.
        name: data set name.
        augment: batch augmentation ``(x (B, *input_shape), generator) -> same shape`` for training
            batches only (``None``: no augmentation).
        val: optional validation split held out of the training set (``val_size`` option).
    """

    train: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple
    name: str
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    val: TensorDataset | None = None

    def __repr__(self) -> str:
        sizes = f"train={len(self.train)}, test={len(self.test)}" + (f", val={len(self.val)}" if self.val is not None else "")
        return f"DatasetSplits(name={self.name!r}, {sizes}, num_classes={self.num_classes}, input_shape={self.input_shape}, augment={self.augment!r})"


def rng(seed: int, stream: int) -> np.random.Generator:
    """NumPy generator for ``(seed, stream)``; different streams are independent."""
    return np.random.default_rng([int(seed), int(stream)])


def balanced_order(y: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(len(y))`` that cycles through the classes (round robin).

    Any prefix of length n is therefore as class-balanced as possible: class counts differ by at most one
    until a class runs out. Shape (N,) -> (N,) int64.
    """
    y = np.asarray(y)
    perm = generator.permutation(len(y))
    labels = y[perm]
    by_label = np.argsort(labels, kind="stable")  # positions in perm grouped by class, perm order kept
    sorted_labels = labels[by_label]
    group_start = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(len(y), dtype=np.int64)
    rank[by_label] = np.arange(len(y)) - group_start  # rank of each perm position within its class
    # sort by rank within class, ties broken by the random position in perm
    return perm[np.lexsort((np.arange(len(y)), rank))]


def check_size(value, name: str, available: int, allow_zero: bool = False) -> int | None:
    """``value`` must be None or an int in [1 (or 0), available]."""
    if value is None:
        return None
    check_int(value, name, none_ok=True, numpy_ok=True, error=TypeError)
    low = 0 if allow_zero else 1
    if not low <= value <= available:
        raise ValueError(f"{name}={value} must be between {low} and {available} (samples available)")
    return int(value)


def take_balanced(x: np.ndarray, y: np.ndarray, n: int | None, seed: int, stream: int, name: str):
    """Class-balanced random subset of n samples (all when n is None), plus the remaining samples.

    Returns ``(x_sub, y_sub, x_rest, y_rest)``; subset and rest keep the original sample order.
    """
    n = check_size(n, name, len(y), allow_zero=True)
    if n is None:
        return x, y, x[:0], y[:0]
    order = balanced_order(y, rng(seed, stream))
    chosen = np.sort(order[:n])
    rest = np.sort(order[n:])
    return x[chosen], y[chosen], x[rest], y[rest]


def to_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """NumPy arrays -> ``TensorDataset(float32, int64)`` (copies, so the tensors own their memory)."""
    return TensorDataset(torch.tensor(np.asarray(x), dtype=torch.float32), torch.tensor(np.asarray(y), dtype=torch.int64))


def make_splits(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    augment,
    seed: int,
    train_size: int | None = None,
    test_size: int | None = None,
    val_size: int | None = None,
) -> DatasetSplits:
    """Apply the common options and wrap the arrays.

    ``val_size`` samples are held out of the training set first (class-balanced), then ``train_size``
    samples are drawn from what is left, and ``test_size`` from the test set; each draw has its own
    random stream of ``seed``.
    """
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{name}: train samples have shape {x_train.shape[1:]}, test samples {x_test.shape[1:]}")
    for part, labels in (("train", y_train), ("test", y_test)):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name}: {part} labels must be in [0, {num_classes - 1}], got [{labels.min()}, {labels.max()}]")
    val = None
    if val_size:
        x_val, y_val, x_train, y_train = take_balanced(x_train, y_train, val_size, seed, STREAM_VAL, "val_size")
        if len(y_train) == 0:
            raise ValueError(f"{name}: val_size={val_size} leaves no training samples")
        val = to_dataset(x_val, y_val)
    x_train, y_train, _, _ = take_balanced(x_train, y_train, train_size, seed, STREAM_TRAIN, "train_size")
    x_test, y_test, _, _ = take_balanced(x_test, y_test, test_size, seed, STREAM_TEST, "test_size")
    if len(y_train) == 0 or len(y_test) == 0:
        raise ValueError(f"{name}: empty split (train {len(y_train)}, test {len(y_test)} samples)")
    return DatasetSplits(
        train=to_dataset(x_train, y_train),
        test=to_dataset(x_test, y_test),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        name=name,
        augment=augment,
        val=val,
    )
