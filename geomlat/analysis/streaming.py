"""Analyses over a whole dataset, more samples than fit in one batch (up to ~50,000 points on a CPU).

Two steps with bounded memory:

1. :func:`capture_dataset`: the features of named layers of any model over a ``torch.utils.data.Dataset``,
   batch by batch with :class:`geomlat.LatentCapture`; each batch is moved to the CPU and written into
   tensors preallocated after the first batch (optionally stored in float16).
2. :func:`streaming_nnk_metrics`: per layer (and per channel) NNK metrics from those features, with the
   k-NN candidates from the chunked exact search (:func:`geomlat.knn`, ``backend="chunked"``) instead of a
   dense N x N similarity matrix.

Memory bound (N samples, layer of d = C * S values, k candidates, storage dtype of b bytes):

- capture: ``N * sum_l d_l * b`` bytes for the stored features, plus one batch's activations;
- metrics of one layer: its N * d values in float32 and in float64 (the NNK kernel is computed in float64),
  one (chunk_size, chunk_size) float32 score tile of the k-NN search (256 MiB by default,
  :data:`geomlat.knn.CHUNK_BYTES`) with its top-k candidates, N * k candidate indices (int64) and N * k
  float64 weights, and the solver's blocks (:data:`geomlat.nnk.SOLVE_BYTES`, 24 MiB). Never O(N^2).
  Per channel, channels are solved in groups of ``max(1, max_nodes // N)`` so the stacked candidates and
  weights stay at about ``max_nodes * k`` values each.

For N = 50,000, d = 64, k = 30: 12.2 MiB of float32 features, 24.4 MiB in float64, 11.4 MiB of
candidates, 11.4 MiB of weights and a 256 MiB tile.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._checks import check_choice, check_labels
from ..capture import LatentCapture
from ..graphs import feature_vectors
from ..kernels import get_kernel
from ..nnk import nnk_loo_predictions, nnk_weights
from .channelwise import MAX_NODES, channelwise_loo_errors

STORAGE_DTYPES = (torch.float32, torch.float16, torch.float64)


def _split_batch(batch) -> tuple[Tensor, Tensor | None]:
    """(inputs, labels or None) of a DataLoader batch: ``(x, y, ...)`` tuples/lists or bare inputs."""
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError("the dataset yields empty tuples: expected (input, label) or an input tensor")
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


@torch.no_grad()
def capture_dataset(
    model: nn.Module,
    dataset: Dataset,
    layers: Iterable[str],
    batch_size: int = 256,
    max_samples: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> tuple[dict[str, Tensor], Tensor | None]:
    """Features of ``layers`` of ``model`` on every sample of ``dataset``, captured batch by batch.

    The model runs in eval mode (its mode is restored afterwards) under ``torch.no_grad``; samples are taken
    in dataset order (no shuffling), so the result equals one forward pass on the whole dataset.

    Args:
        model: any module; layers: names from ``model.named_modules()`` (see :class:`geomlat.LatentCapture`).
        dataset: a map-style dataset yielding ``(input, label)`` (or inputs only; then labels are None).
        batch_size: samples per forward pass. max_samples: use only the first ``max_samples`` samples.
        dtype: storage dtype of the features (float32, float16 to halve the memory, or float64).
        device: where the model runs (default: the device of its first parameter, else CPU); features are
            moved to the CPU after every batch.
        num_workers: DataLoader workers.

    Returns:
        ``({layer: (N, ...) CPU tensor of dtype}, (N,) long labels or None)``.

    Memory: ``N * sum_l d_l`` values of ``dtype`` for the features, plus one batch's activations.
    """
    layers = list(layers)
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(dataset)
    if max_samples is not None:
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2, got {max_samples}")
        n = min(n, max_samples)
        dataset = Subset(dataset, range(n))
    if n < 2:
        raise ValueError(f"the dataset has {n} samples; an analysis needs at least 2")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    feats: dict[str, Tensor] = {}
    labels: Tensor | None = None
    start = 0
    try:
        with LatentCapture(model, layers, detach=True) as out:
            capture = None
            for batch in loader:
                x, y = _split_batch(batch)
                model(x.to(device))
                if capture is None:  # preallocate from the first batch's shapes
                    capture = True
                    for name in layers:
                        if name not in out:
                            raise RuntimeError(f"layer {name!r} produced no output during the forward pass")
                        feats[name] = torch.empty((n, *out[name].shape[1:]), dtype=dtype)
                    if y is not None:
                        labels = torch.empty(n, dtype=torch.long)
                b = x.shape[0]
                for name in layers:
                    feats[name][start : start + b] = out[name].to("cpu", dtype)
                if labels is not None:
                    labels[start : start + b] = torch.as_tensor(y).long().cpu()
                start += b
    finally:
        model.train(was_training)
    return feats, labels


@torch.no_grad()
def streaming_nnk_metrics(
    features: dict[str, Tensor],
    labels: Tensor,
    k: int = 15,
    per_channel: bool = False,
    kernel: str = "cosine",
    knn_backend: str = "chunked",
    chunk_size: int | None = None,
    max_nodes: int = MAX_NODES,
    *,
    attention_mask: Tensor | None = None,
    reduce: str | None = None,
    **nnk_options,
) -> dict[str, dict]:
    """NNK metrics of every layer over all N samples, candidates from the chunked exact k-NN (no N x N matrix).

    Args:
        features: ``{layer: (N, ...) tensor}`` (e.g. from :func:`capture_dataset`; float16 is computed in float32).
        labels: (N,) integer classes.
        k: k-NN candidates. per_channel: also the channel-wise errors of (N, C, ...) layers with spatial
            dimensions (a (N, d) layer has no channel maps and gets none).
        kernel: NNK kernel (see :func:`geomlat.nnk.nnk_weights`). knn_backend, chunk_size: the k-NN search
            (``"chunked"``: one (chunk_size, chunk_size) tile at a time).
        max_nodes: channels per solver call for the channel-wise errors (see
            :func:`geomlat.analysis.channelwise_loo_errors`). nnk_options: ``sigma``, ``tol``, ``solver``.
        attention_mask: (N, T), 1 on real tokens, for (N, T, H) token features; reduce: how tokens become one
            vector (:func:`geomlat.sequences.sample_vectors`: with a mask the mean of the real tokens; a 3-D
            layer without either is flattened with geomlat's warning). Padding never matters.

    Returns:
        ``{layer: {"loo_error": NNK leave-one-out interpolation error (as geomlat.nnk.nnk_interpolation),
        "n_neighbors_mean": mean number of NNK neighbors, "num_points": N, "dim": d,
        "channel_loo_errors": (C,) float64 (with per_channel and spatial layers)}}``.

    Memory: see the module docstring (one layer at a time).
    """
    if not features:
        raise ValueError("features is empty: pass a dict {layer name: (N, ...) tensor}")
    get_kernel(kernel)  # ValueError listing the registered kernels
    out: dict[str, dict] = {}
    for name, feat in features.items():
        x = feat.float() if feat.dtype == torch.float16 else feat
        if attention_mask is not None or reduce is not None or x.dim() == 3:
            x = feature_vectors(x, attention_mask, reduce, f"streaming_nnk_metrics: features[{name!r}]")
        y = check_labels(labels, x.shape[0]).to(x.device)
        res = nnk_weights(x, k, kernel=kernel, knn_backend=knn_backend, chunk_size=chunk_size, **nnk_options)
        pred = nnk_loo_predictions(res, y)
        entry = {
            "loo_error": float((pred.argmax(1) != y).double().mean()),
            "n_neighbors_mean": float(res.mask.sum(1).double().mean()),
            "num_points": int(x.shape[0]),
            "dim": int(x[0].numel()),
        }
        del res, pred
        if per_channel and x.dim() >= 3:
            entry["channel_loo_errors"] = channelwise_loo_errors(
                x, y, k, max_nodes=max_nodes, kernel=kernel, knn_backend=knn_backend, chunk_size=chunk_size, **nnk_options
            )
        out[name] = entry
    return out


def stream_nnk_analysis(
    model: nn.Module,
    dataset: Dataset,
    layers: Iterable[str],
    k: int = 15,
    batch_size: int = 256,
    max_samples: int | None = None,
    dtype: torch.dtype = torch.float32,
    per_channel: bool = False,
    device: torch.device | str | None = None,
    **metric_options,
) -> dict[str, dict]:
    """:func:`capture_dataset` then :func:`streaming_nnk_metrics` (the dataset must yield labels).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> train_set = TensorDataset(torch.randn(300, 8), torch.randint(0, 4, (300,)))
        >>> metrics = stream_nnk_analysis(model, train_set, ["1", "2"], k=10, batch_size=64)
        >>> 0.0 <= metrics["2"]["loo_error"] <= 1.0
        True
    """
    feats, labels = capture_dataset(model, dataset, layers, batch_size, max_samples, dtype, device)
    if labels is None:
        raise ValueError("the dataset yields no labels: NNK interpolation errors need (input, label) samples")
    return streaming_nnk_metrics(feats, labels, k, per_channel=per_channel, **metric_options)
