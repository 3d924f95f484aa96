"""CIFAR-10 from a local ``cifar-10-batches-py`` folder, read with a restricted unpickler (never plain ``pickle.load``).

The official batches are Python pickles of dicts ``{b"batch_label", b"labels", b"data", b"filenames"}``
with ``data`` a uint8 array (N, 3072) (1024 red, then green, then blue values, rows of 32 pixels) and
``labels`` a list of N ints in 0..9. Unpickling them needs only three globals (numpy's array
reconstruction, ``numpy.ndarray`` and ``numpy.dtype``); :class:`RestrictedUnpickler` refuses every other,
except a latin-1-only ``_codecs.encode`` needed by Python 3 re-pickles at protocol 2.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np

from .augment import RandomCropFlip
from .splits import DatasetSplits, make_splits

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
FOLDER_NAME = "cifar-10-batches-py"
IMAGE_SIZE = 3 * 32 * 32
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _numpy_global(modules: tuple[str, ...], name: str):
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"cannot find {name} in {modules}")


def _latin1_encode(obj, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` that only does what protocol-2 pickles of bytes need (str -> latin-1)."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "") != "latin1" or errors != "strict":
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(obj).__name__}, {encoding!r}, {errors!r})")
    return obj.encode("latin1")


# (module, name) as written in the pickle -> object. numpy >= 2 writes numpy._core, the official
# (Python 2) batches numpy.core; protocol 5 re-pickles use _frombuffer instead of _reconstruct.
_RECONSTRUCT = ("numpy._core.multiarray", "numpy.core.multiarray")
_FROMBUFFER = ("numpy._core.numeric", "numpy.core.numeric")
ALLOWED_GLOBALS = {
    **{(m, "_reconstruct"): (_RECONSTRUCT, "_reconstruct") for m in _RECONSTRUCT},
    **{(m, "_frombuffer"): (_FROMBUFFER, "_frombuffer") for m in _FROMBUFFER},
    ("numpy", "ndarray"): (("numpy",), "ndarray"),
    ("numpy", "dtype"): (("numpy",), "dtype"),
    # Python 3 pickles bytes with protocol 2 as _codecs.encode(str, "latin1"): only that call is allowed
    ("_codecs", "encode"): None,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals needed for arrays (:data:`ALLOWED_GLOBALS`).

    Any other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` before
    anything is called. Dicts, lists, ints, bytes and strings need no globals. Python 2 strings are
    read as bytes (``encoding="bytes"``), as the official batches require.
    """

    def __init__(self, file, *, encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR batch may only reference "
                f"{sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)}"
            )
        if key == ("_codecs", "encode"):
            return _latin1_encode
        modules, attr = ALLOWED_GLOBALS[key]
        return _numpy_global(modules, attr)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids in a CIFAR batch")


def restricted_load(path: str | Path):
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; errors become ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch file {path} not found")
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ImportError, AttributeError, IndexError, TypeError, ValueError, KeyError,
                OverflowError, MemoryError, RecursionError, struct.error) as err:
            # truncated ("pickle data was truncated"), garbage ("invalid load key") or refused (a global)
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path} is not a valid CIFAR-10 batch: {message}") from err


def _str_keys(obj: dict) -> dict:
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file -> (images uint8 (N, 3, 32, 32), labels int64 (N,)), checking keys, shapes, labels."""
    path = Path(path)
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict with keys 'data' and 'labels', got {type(obj).__name__}")
    batch = _str_keys(obj)
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; found {sorted(map(str, batch))}")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_SIZE:
        desc = f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, {IMAGE_SIZE}), got {desc}")
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: 'labels' is not a list of ints: {err}") from err
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must be {data.shape[0]} integers (one per image), got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9, got range [{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def find_cifar_folder(data_dir: str | Path) -> Path:
    """``data_dir/cifar-10-batches-py`` if it exists, else ``data_dir`` itself when it holds the batch files."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 data folder {root} does not exist (expected {FOLDER_NAME}/ or the batch files in it)")
    if (root / FOLDER_NAME).is_dir():
        return root / FOLDER_NAME
    if any((root / name).exists() for name in (*TRAIN_FILES, TEST_FILE)):
        return root
    raise FileNotFoundError(
        f"no CIFAR-10 data in {root}: expected {root / FOLDER_NAME} or the files {', '.join(TRAIN_FILES)}, {TEST_FILE} "
        "(the python version from https://www.cs.toronto.edu/~kriz/cifar.html, extracted)"
    )


def read_cifar10(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All batches -> (x_train uint8 (N, 3, 32, 32), y_train int64, x_test uint8, y_test int64)."""
    folder = find_cifar_folder(data_dir)
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 folder {folder} lacks batch file(s) {missing}")
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    x_test, y_test = read_batch(folder / TEST_FILE)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test


def _default_data_dir(data_dir: str | Path | None) -> str | Path:
    return os.environ.get("GEOMLAT_DATA_DIR", "data") if data_dir is None else data_dir


def check_cifar10(data_dir: str | Path | None = None) -> Path:
    """Read and check every batch file of the CIFAR-10 folder (as :func:`load_cifar10_splits` will), without
    keeping them: lets a study stop before writing anything. Returns the folder.

    Raises:
        FileNotFoundError: folder or batch file missing. ValueError: a truncated, garbage or refused batch.
    """
    folder = find_cifar_folder(_default_data_dir(data_dir))
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 folder {folder} lacks batch file(s) {missing}")
    for name in (*TRAIN_FILES, TEST_FILE):
        read_batch(folder / name)
    return folder


def load_cifar10_splits(
    data_dir: str | Path | None = None,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    val_size: int | None = None,
    augment: bool = True,
) -> DatasetSplits:
    """CIFAR-10 images (3, 32, 32) in [0, 1] (uint8 / 255, no mean/std normalization), 50,000 / 10,000.

    ``data_dir``: folder holding ``cifar-10-batches-py/`` or the batch files; ``None`` -> the environment
    variable ``GEOMLAT_DATA_DIR``, else ``./data``. ``train_size``/``test_size``: class-balanced random
    subsets given ``seed``; ``val_size``: held out of the training set. Augmentation: random crop with
    4-pixel zero padding + horizontal flip.

    Raises:
        FileNotFoundError: folder or batch file missing (the message names the path).
        ValueError: malformed batch (not a dict, wrong keys/shapes/labels, or a pickle referencing
            anything but numpy array globals).
    """
    data_dir = _default_data_dir(data_dir)
    x_train, y_train, x_test, y_test = read_cifar10(data_dir)
    # subsets are taken on uint8 before converting, so that a small train_size stays cheap
    splits = make_splits(
        "cifar10",
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=10,
        augment=RandomCropFlip(4, flip=True) if augment else None,
        seed=seed,
        train_size=train_size,
        test_size=test_size,
        val_size=val_size,
    )
    for dataset in (splits.train, splits.test, splits.val):
        if dataset is not None:
            dataset.tensors = (dataset.tensors[0].div_(255.0), dataset.tensors[1])
    return splits


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_batch(path: str | Path, images: np.ndarray, labels, batch_label: str = "batch", protocol: int = 3) -> None:
    """Write one batch in the official format (bytes keys, uint8 (N, 3072) data) atomically.

    ``images``: uint8 (N, 3, 32, 32) or (N, 3072). Protocol 3 uses the same ``GLOBAL`` opcodes as the
    official Python 2 files and stores bytes natively.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), IMAGE_SIZE)
    labels = [int(v) for v in labels]
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    batch = {
        b"batch_label": batch_label.encode(),
        b"labels": labels,
        b"data": images,
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(labels))],
    }
    buffer = io.BytesIO()
    pickle.dump(batch, buffer, protocol=protocol)
    _atomic_write_bytes(Path(path), buffer.getvalue())


def write_cifar_folder(path: str | Path, n_train_per_batch: int = 10, n_test: int = 10, seed: int = 0) -> Path:
    """Write a small random CIFAR-10 folder in the official format (for tests and demos); returns ``path``.

    ``data_batch_1..5`` hold ``n_train_per_batch`` images each, ``test_batch`` ``n_test``; pixels are
    uniform uint8 and labels cycle through 0..9 in a random order (so every class appears when n >= 10).
    Also writes ``batches.meta`` (label names).
    """
    if n_train_per_batch < 1 or n_test < 1:
        raise ValueError(f"n_train_per_batch and n_test must be >= 1, got {n_train_per_batch}, {n_test}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    for name, n in [*((name, n_train_per_batch) for name in TRAIN_FILES), (TEST_FILE, n_test)]:
        images = gen.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = gen.permutation(np.arange(n) % 10)
        write_batch(path / name, images, labels, batch_label=f"{name} (synthetic)")
    meta = {b"label_names": [n.encode() for n in LABEL_NAMES], b"num_cases_per_batch": n_train_per_batch, b"num_vis": IMAGE_SIZE}
    _atomic_write_bytes(path / META_FILE, pickle.dumps(meta, protocol=3))
    return path
