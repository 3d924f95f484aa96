"""Data sets that need no files: scikit-learn digits (8x8 images) and MNIST-1D (generated signals of length 40)."""
from __future__ import annotations

import random
from functools import lru_cache

import numpy as np

from .augment import RandomCropFlip
from .splits import STREAM_SPLIT, DatasetSplits, balanced_order, check_size, make_splits, rng


def load_digits_splits(
    data_dir: str | None = None,
    seed: int = 0,
    test_size: int = 500,
    train_size: int | None = None,
    val_size: int | None = None,
    augment: bool = True,
) -> DatasetSplits:
    """The 1,797 scikit-learn digits (bundled with scikit-learn, no download) as images (1, 8, 8) in [0, 1].

    Pixels (0..16) are divided by 16. The train/test split is random given ``seed`` and class-balanced:
    ``test_size`` (default 500, i.e. 50 per class) test samples, the other 1,297 for training.
    ``train_size``/``val_size`` then sub-sample / hold out from the training part. Augmentation
    (``augment=True``): random crop of the 1-pixel zero-padded image, no flip (digits are not mirror-symmetric).
    ``data_dir`` is ignored.
    """
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = y.astype(np.int64)
    test_size = check_size(test_size, "test_size", len(y) - 1)
    if test_size is None:
        raise ValueError("digits needs test_size (the size of its test split), got None")
    order = balanced_order(y, rng(seed, STREAM_SPLIT))
    test_idx, train_idx = np.sort(order[:test_size]), np.sort(order[test_size:])
    return make_splits(
        "digits",
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
        num_classes=10,
        augment=RandomCropFlip(1, flip=False) if augment else None,
        seed=seed,
        train_size=train_size,
        val_size=val_size,
    )


def load_mnist1d_splits(
    data_dir: str | None = None,
    seed: int = 0,
    num_samples: int = 5000,
    train_split: float = 0.8,
    train_size: int | None = None,
    test_size: int | None = None,
    val_size: int | None = None,
    augment: bool = False,
) -> DatasetSplits:
    """MNIST-1D (Greydanus 2020) generated locally: signals (1, 40), 10 classes.

    Calls ``mnist1d.data.make_dataset`` with ``mnist1d.data.get_dataset_args()`` (the package defaults:
    5,000 samples, 80/20 split -> 4,000 train / 1,000 test) with ``seed``, ``num_samples`` and
    ``train_split`` overridden; never the package's download path (``get_dataset``). The generator
    standardizes the whole data set to mean 0, std 1 itself; no further scaling is done here.
    ``mnist1d`` reseeds the global ``random`` and ``numpy.random`` generators: their states are restored
    afterwards. ``augment=True``: random shift of at most 2 samples with zero fill (default off, as in the
    MNIST-1D benchmarks). ``data_dir`` is ignored. Generated arrays are cached in memory (4 settings).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 20:
        raise ValueError(f"num_samples must be an int >= 20 (10 classes, train and test), got {num_samples!r}")
    if not 0.0 < train_split < 1.0:
        raise ValueError(f"train_split must be in (0, 1), got {train_split}")
    x_train, y_train, x_test, y_test = _generate_mnist1d(num_samples, float(train_split), int(seed))
    return make_splits(
        "mnist1d",
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=10,
        augment=RandomCropFlip(2, flip=False) if augment else None,
        seed=seed,
        train_size=train_size,
        test_size=test_size,
        val_size=val_size,
    )


@lru_cache(maxsize=4)
def _generate_mnist1d(num_samples: int, train_split: float, seed: int):
    """Run the MNIST-1D generator; returns read-only arrays x_train (N, 1, 40) float32, y_train (N,) int64, x_test, y_test."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = train_split
    args.seed = seed
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = (
        data["x"].astype(np.float32)[:, None, :],
        data["y"].astype(np.int64),
        data["x_test"].astype(np.float32)[:, None, :],
        data["y_test"].astype(np.int64),
    )
    for a in arrays:
        a.setflags(write=False)
    return arrays
