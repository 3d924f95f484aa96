"""Streaming analysis: batch-by-batch capture equals one forward pass; chunked-k-NN metrics equal the dense path."""
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from geomlat import LatentCapture
from geomlat.analysis import (
    capture_dataset,
    channelwise_loo_errors,
    stream_nnk_analysis,
    streaming_nnk_metrics,
)
from geomlat.nnk import nnk_interpolation, nnk_weights


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 3 * 3, 3),
    )


def image_data(n=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) + y[:, None, None, None].float()
    return x, y


def test_capture_over_batches_equals_one_forward_pass():
    model = small_cnn()
    model.train()  # capture switches to eval (BatchNorm running statistics) and restores the mode
    x, y = image_data()
    layers = ["2", "4", "6"]
    feats, labels = capture_dataset(model, TensorDataset(x, y), layers, batch_size=8)
    assert model.training
    model.eval()
    with torch.no_grad(), LatentCapture(model, layers, detach=True) as ref:
        model(x)
    assert torch.equal(labels, y)
    for name in layers:
        assert feats[name].shape == ref[name].shape and feats[name].dtype == torch.float32
        torch.testing.assert_close(feats[name], ref[name], rtol=1e-5, atol=1e-6)
    half, _ = capture_dataset(model, TensorDataset(x, y), ["2"], batch_size=5, dtype=torch.float16)
    assert half["2"].dtype == torch.float16
    torch.testing.assert_close(half["2"].float(), ref["2"], rtol=2e-3, atol=2e-3)
    first, first_labels = capture_dataset(model, TensorDataset(x, y), ["4"], batch_size=8, max_samples=20)
    assert first["4"].shape[0] == 20 and torch.equal(first_labels, y[:20])
    torch.testing.assert_close(first["4"], ref["4"][:20], rtol=1e-5, atol=1e-6)


def test_streaming_metrics_equal_the_one_batch_computation():
    model = small_cnn(1)
    x, y = image_data(60, seed=1)
    out = stream_nnk_analysis(model, TensorDataset(x, y), ["2", "4"], k=6, batch_size=7, per_channel=True, chunk_size=16)
    model.eval()
    with torch.no_grad(), LatentCapture(model, ["2", "4"], detach=True) as ref:
        model(x)
    for name in ("2", "4"):
        feat = ref[name]
        assert out[name]["loo_error"] == pytest.approx(nnk_interpolation(feat, y, 6)[1], abs=1e-12)
        dense = nnk_weights(feat, 6)
        assert out[name]["n_neighbors_mean"] == pytest.approx(float(dense.mask.sum(1).double().mean()), abs=1e-12)
        assert out[name]["num_points"] == 60 and out[name]["dim"] == feat[0].numel()
        torch.testing.assert_close(out[name]["channel_loo_errors"], channelwise_loo_errors(feat, y, 6), rtol=0, atol=1e-12)


class Points(Dataset):
    """A map-style dataset of (point, label) computed on access (nothing held but the seed)."""

    def __init__(self, n, d, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 5, (n,), generator=g)
        self.centers = torch.randn(5, d, generator=g)
        self.n, self.d, self.seed = n, d, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        return self.centers[self.y[i]] + 1.5 * torch.randn(self.d, generator=g), int(self.y[i])


def test_streaming_5000_points_equals_the_dense_path():
    n = 5000
    data = Points(n, 32)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Unflatten(1, (4, 4, 4)))
    feats, labels = capture_dataset(model, data, ["1", "2"], batch_size=512)
    assert feats["1"].shape == (n, 64) and feats["2"].shape == (n, 4, 4, 4)
    out = streaming_nnk_metrics({"1": feats["1"]}, labels, k=10, chunk_size=1024)  # 5 x 5 tiles, never 5000 x 5000
    _, dense_error = nnk_interpolation(feats["1"], labels, 10)  # dense k-NN path
    assert out["1"]["loo_error"] == pytest.approx(dense_error, abs=1e-12)
    assert 0.0 < dense_error < 0.6  # a real classification problem, not a degenerate one
    # per channel, on a subset of 1,500 points and two channels (dense per-channel path as reference)
    sub = feats["2"][:1500, :2]
    chunked = channelwise_loo_errors(sub, labels[:1500], 10, knn_backend="chunked", chunk_size=256)
    torch.testing.assert_close(chunked, channelwise_loo_errors(sub, labels[:1500], 10), rtol=0, atol=1e-12)


def test_streaming_bad_input():
    model = small_cnn()
    x, y = image_data(10)
    with pytest.raises(KeyError, match="unknown layer"):
        capture_dataset(model, TensorDataset(x, y), ["nope"])
    with pytest.raises(ValueError, match="no labels"):
        stream_nnk_analysis(model, TensorDataset(x), ["2"], k=3)
    with pytest.raises(ValueError, match="dtype"):
        capture_dataset(model, TensorDataset(x, y), ["2"], dtype=torch.int8)
    with pytest.raises(ValueError, match="max_samples"):
        capture_dataset(model, TensorDataset(x, y), ["2"], max_samples=1)
    with pytest.raises(ValueError, match="features is empty"):
        streaming_nnk_metrics({}, y, k=3)
