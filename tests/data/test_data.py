"""Data: embedded loaders (determinism, exact values vs the sources), class-balanced subsets, the CIFAR-10
folder reader (round trip, errors, restricted unpickler) and the vectorized crop/flip augmentation."""
import os
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlat.data import (
    DATASETS,
    RandomCropFlip,
    apply_crop_flip,
    balanced_order,
    draw_crop_flip,
    load_dataset,
    read_batch,
    write_cifar_folder,
)
from geomlat.data.cifar import TRAIN_FILES, check_cifar10, write_batch
from geomlat.data.splits import rng


def _rows(t):
    return {tuple(r) for r in t.reshape(len(t), -1).tolist()}


# ---------------------------------------------------------------- digits
def test_digits_split_is_exact_partition_and_balanced():
    from sklearn.datasets import load_digits

    splits = load_dataset("digits", seed=3)
    x_all, y_all = load_digits(return_X_y=True)
    (xtr, ytr), (xte, yte) = splits.train.tensors, splits.test.tensors
    assert xtr.shape == (1297, 1, 8, 8) and xte.shape == (500, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 10 and splits.name == "digits"
    assert 0 <= xtr.min() and xtr.max() == 1.0
    # every (image, label) of sklearn appears exactly once across train + test, scaled by 1/16
    ours = sorted(map(tuple, torch.cat([torch.cat([xtr, xte]).reshape(-1, 64) * 16, torch.cat([ytr, yte])[:, None].float()], 1).tolist()))
    ref = sorted(map(tuple, np.concatenate([x_all, y_all[:, None]], 1).tolist()))
    assert ours == ref
    assert torch.bincount(yte, minlength=10).tolist() == [50] * 10
    assert splits.augment == RandomCropFlip(1, flip=False)


def test_digits_deterministic_and_seed_dependent():
    a, b, c = (load_dataset("digits", seed=s, test_size=100) for s in (0, 0, 1))
    assert torch.equal(a.train.tensors[0], b.train.tensors[0]) and torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert _rows(a.test.tensors[0]) != _rows(c.test.tensors[0])
    assert len(a.test) == 100 and len(a.train) == 1697


# ---------------------------------------------------------------- mnist1d
def test_mnist1d_matches_direct_generation_and_restores_global_rng():
    from mnist1d.data import get_dataset_args, make_dataset

    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    splits = load_dataset("mnist1d", seed=5, num_samples=200)
    assert (random.random(), np.random.rand()) == (expected_py, expected_np)  # global state untouched

    args = get_dataset_args()
    args.num_samples, args.seed = 200, 5
    ref = make_dataset(args)
    (xtr, ytr), (xte, yte) = splits.train.tensors, splits.test.tensors
    assert xtr.shape == (160, 1, 40) and xte.shape == (40, 1, 40) and splits.input_shape == (1, 40)
    np.testing.assert_allclose(xtr[:, 0].numpy(), ref["x"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ytr.numpy(), ref["y"])
    np.testing.assert_allclose(xte[:, 0].numpy(), ref["x_test"], rtol=1e-6, atol=1e-6)
    assert splits.augment is None


def test_mnist1d_seed_dependent():
    a = load_dataset("mnist1d", seed=0, num_samples=100)
    b = load_dataset("mnist1d", seed=1, num_samples=100)
    assert not torch.allclose(a.train.tensors[0], b.train.tensors[0])
    assert load_dataset("mnist1d", seed=0, num_samples=100, augment=True).augment == RandomCropFlip(2, flip=False)


# ---------------------------------------------------------------- subsets
def test_train_val_test_subsets_are_balanced_and_disjoint():
    s = load_dataset("digits", seed=2, train_size=95, val_size=50, test_size=200)
    assert (len(s.train), len(s.val), len(s.test)) == (95, 50, 200)
    assert not _rows(s.train.tensors[0]) & _rows(s.val.tensors[0])
    counts = torch.bincount(s.train.tensors[1], minlength=10)
    assert counts.max() - counts.min() <= 1
    assert torch.bincount(s.val.tensors[1], minlength=10).tolist() == [5] * 10
    # the validation split does not depend on train_size (its own random stream)
    s2 = load_dataset("digits", seed=2, train_size=20, val_size=50, test_size=200)
    assert torch.equal(s.val.tensors[0], s2.val.tensors[0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.integers(0, 1000))
def test_balanced_order_property(labels, seed):
    y = np.array(labels)
    order = balanced_order(y, rng(seed, 0))
    assert sorted(order.tolist()) == list(range(len(y)))
    classes = np.unique(y)
    for n in range(1, len(y) + 1):
        counts = np.array([(y[order[:n]] == c).sum() for c in classes])
        available = np.array([(y == c).sum() for c in classes])
        # a class is under-represented only when it has run out of samples
        assert all(counts[i] >= min(available[i], counts.max() - 1) for i in range(len(classes)))


def test_load_dataset_errors():
    with pytest.raises(KeyError, match="digits"):
        load_dataset("imagenet")
    with pytest.raises(TypeError, match="num_samples"):
        load_dataset("digits", num_samples=10)
    with pytest.raises(ValueError, match="train_size"):
        load_dataset("digits", train_size=5000)
    with pytest.raises(ValueError, match="num_samples"):
        load_dataset("mnist1d", num_samples=5)
    assert set(DATASETS) == {"digits", "mnist1d", "cifar10"}


# ---------------------------------------------------------------- CIFAR-10
def _write_known_folder(folder, n=12, seed=0):
    gen = np.random.default_rng(seed)
    images, labels = {}, {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_FILES, "test_batch"):
        images[name] = gen.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels[name] = np.arange(n) % 10
        write_batch(folder / name, images[name], labels[name])
    return images, labels


@pytest.mark.parametrize("nested", [True, False])
def test_cifar_round_trip_exact(tmp_path, nested):
    folder = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    images, labels = _write_known_folder(folder)
    s = load_dataset("cifar10", data_dir=str(tmp_path))
    x_train = np.concatenate([images[n] for n in TRAIN_FILES])
    np.testing.assert_array_equal((s.train.tensors[0] * 255).round().numpy().astype(np.uint8), x_train)
    np.testing.assert_array_equal(s.train.tensors[1].numpy(), np.concatenate([labels[n] for n in TRAIN_FILES]))
    np.testing.assert_array_equal((s.test.tensors[0] * 255).round().numpy(), images["test_batch"])
    assert s.input_shape == (3, 32, 32) and s.train.tensors[0].dtype == torch.float32
    assert 0 <= s.train.tensors[0].min() and s.train.tensors[0].max() <= 1
    assert s.augment == RandomCropFlip(4, flip=True)


def test_cifar_channel_layout(tmp_path):
    # official layout: a row holds the 1024 red values, then green, then blue, each row-major 32x32
    row = np.arange(3072) % 251
    write_cifar_folder(tmp_path, 1, 1)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": row[None].astype(np.uint8), b"labels": [7]}, f, protocol=3)
    images, labels = read_batch(tmp_path / "test_batch")
    assert labels.tolist() == [7]
    assert images[0, 1, 2, 5] == row[1024 + 2 * 32 + 5]
    assert images[0, 2, 31, 0] == row[2048 + 31 * 32]


def test_write_cifar_folder_and_subsets(tmp_path):
    write_cifar_folder(tmp_path / "cifar-10-batches-py", n_train_per_batch=10, n_test=20, seed=1)
    s = load_dataset("cifar10", data_dir=tmp_path, seed=4, train_size=30, test_size=10, val_size=10)
    assert (len(s.train), len(s.test), len(s.val)) == (30, 10, 10)
    assert torch.bincount(s.test.tensors[1], minlength=10).tolist() == [1] * 10
    again = load_dataset("cifar10", data_dir=tmp_path, seed=4, train_size=30, test_size=10, val_size=10)
    assert torch.equal(s.train.tensors[0], again.train.tensors[0])
    other = load_dataset("cifar10", data_dir=tmp_path, seed=5, train_size=30, test_size=10, val_size=10)
    assert not torch.equal(s.train.tensors[0], other.train.tensors[0])
    assert load_dataset("cifar10", data_dir=tmp_path, augment=False).augment is None


def test_cifar_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("cifar10", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    write_cifar_folder(tmp_path, 2, 2)
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "payload,message",
    [
        ({b"labels": [1]}, "missing key"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, "shape"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}, "0..9"),
        ([1, 2, 3], "dict"),
    ],
)
def test_cifar_malformed_batch(tmp_path, payload, message):
    write_cifar_folder(tmp_path, 2, 2)
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump(payload, f, protocol=3)
    with pytest.raises(ValueError, match=message) as err:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert "data_batch_2" in str(err.value)


def test_cifar_truncated_file(tmp_path):
    write_cifar_folder(tmp_path, 2, 2)
    (tmp_path / "test_batch").write_bytes(b"\x80\x03}q\x00")
    with pytest.raises(ValueError, match="test_batch"):
        load_dataset("cifar10", data_dir=str(tmp_path))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("evil_factory,name", [(_Evil, "system"), (lambda m: _EvalEvil(), "eval")])
def test_restricted_unpickler_refuses_code(tmp_path, evil_factory, name):
    marker = tmp_path / "pwned"
    write_cifar_folder(tmp_path, 2, 2)
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": evil_factory(marker)}
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump(payload, f, protocol=3)
    with pytest.raises(ValueError, match=f"refusing to load global .*{name}"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_unpickler_accepts_numpy_arrays_of_any_protocol(tmp_path, protocol):
    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    raw = pickle.dumps({b"data": data, b"labels": [0, 5, 9]}, protocol=protocol)
    assert (b"_codecs" in raw) == (protocol == 2)  # protocol 2 stores bytes through _codecs.encode
    (tmp_path / "b").write_bytes(raw)
    images, labels = read_batch(tmp_path / "b")
    np.testing.assert_array_equal(images.reshape(3, -1), data)
    assert labels.tolist() == [0, 5, 9]


def test_codecs_encode_is_latin1_only(tmp_path):
    import codecs

    class Rot13:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    raw = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": Rot13()}, protocol=2)
    assert b"_codecs\nencode" in raw
    (tmp_path / "b").write_bytes(raw)
    with pytest.raises(ValueError, match="refusing _codecs.encode"):
        read_batch(tmp_path / "b")


def test_unpickler_accepts_legacy_numpy_core_name(tmp_path):
    # the official (numpy 1.x era) batches reference numpy.core.multiarray._reconstruct
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=3)
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    (tmp_path / "b").write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    images, _ = read_batch(tmp_path / "b")
    np.testing.assert_array_equal(images.reshape(2, -1), data)


# ---------------------------------------------------------------- augmentation
def _manual_crop_flip(x, offsets, flips, p):
    """Per-sample reference with NumPy padding and slicing."""
    x = x.numpy()
    out = np.empty_like(x)
    for b in range(len(x)):
        if x.ndim == 4:
            padded = np.pad(x[b], ((0, 0), (p, p), (p, p)))
            oy, ox = offsets[b].tolist()
            crop = padded[:, oy : oy + x.shape[2], ox : ox + x.shape[3]]
        else:
            padded = np.pad(x[b], ((0, 0), (p, p)))
            crop = padded[:, offsets[b, 0] : offsets[b, 0] + x.shape[2]]
        out[b] = crop[..., ::-1] if flips[b] else crop
    return torch.from_numpy(out)


@pytest.mark.parametrize("shape,padding,flip", [((64, 3, 8, 8), 4, True), ((64, 1, 8, 8), 1, False), ((32, 2, 40), 2, False), ((16, 1, 9), 3, True)])
def test_crop_flip_equals_manual_crop(shape, padding, flip):
    x = torch.rand(shape)
    gen = torch.Generator().manual_seed(7)
    twin = torch.Generator().set_state(gen.get_state())
    out = RandomCropFlip(padding, flip)(x, gen)
    params = draw_crop_flip(x, twin, padding, flip)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, _manual_crop_flip(x, params.offsets, params.flip, padding), rtol=0, atol=0)
    assert params.offsets.min() >= 0 and params.offsets.max() <= 2 * padding
    if flip:
        assert 0 < params.flip.sum() < len(x)
    else:
        assert not params.flip.any()


def test_augment_statistics_and_determinism():
    x = torch.rand(2000, 1, 4, 4)
    params = draw_crop_flip(x, torch.Generator().manual_seed(0), 4, True)
    # offsets cover 0..8 on both axes, flips about half
    assert set(params.offsets.unique().tolist()) == set(range(9))
    assert 0.45 < params.flip.float().mean() < 0.55
    aug = RandomCropFlip(4, True)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_and_center_crop_exact():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    center = draw_crop_flip(x, torch.Generator().manual_seed(0), 2, True)
    center = type(center)(torch.full_like(center.offsets, 2), torch.tensor([True, False]))
    out = apply_crop_flip(x, center, 2)
    torch.testing.assert_close(out[0], x[0].flip(-1))
    torch.testing.assert_close(out[1], x[1])
    # a corner offset shifts the image and fills with zeros (the padding value)
    corner = type(center)(torch.zeros_like(center.offsets), torch.tensor([False, False]))
    shifted = apply_crop_flip(x, corner, 2)
    torch.testing.assert_close(shifted, F.pad(x, (2, 2, 2, 2))[..., :4, :5])


def test_augment_errors():
    with pytest.raises(ValueError, match="padding"):
        RandomCropFlip(-1, True)
    with pytest.raises(ValueError, match="batch"):
        RandomCropFlip(1, True)(torch.rand(8, 8), torch.Generator())
    with pytest.raises(TypeError, match="Generator"):
        RandomCropFlip(1, True)(torch.rand(2, 1, 8, 8), 0)


def test_check_cifar10_reads_every_batch_before_a_study_writes(tmp_path, monkeypatch):
    folder = write_cifar_folder(tmp_path / "d" / "cifar-10-batches-py", 2, 2)
    monkeypatch.setenv("GEOMLAT_DATA_DIR", str(tmp_path / "d"))
    assert check_cifar10() == folder  # the loader's default folder
    data = (folder / "data_batch_5").read_bytes()
    (folder / "data_batch_5").write_bytes(data[: len(data) - 100])  # truncated at the end: only a full read sees it
    with pytest.raises(ValueError, match="data_batch_5 is not a valid CIFAR-10 batch") as info:
        check_cifar10(tmp_path / "d")
    assert len(str(info.value).splitlines()) == 1
