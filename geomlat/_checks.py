"""Input validation shared by the geometry core: every bad input gets an error naming the problem."""
from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import Tensor

#: Dtypes whose geometry is computed in float32 (their eps and range cannot hold squared norms).
HALF_DTYPES = (torch.float16, torch.bfloat16)
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def upcast_half(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16/bfloat16 (differentiable; gradients flow back in x's dtype), else ``x``.

    The geometry (Gram matrices, norms, distances, their epsilons) of half-precision inputs is computed in
    float32: float16 overflows at 65504 (a squared norm of 256 units) and its 1e-12 / 1e-24 guards are 0.
    """
    return x.float() if x.dtype in HALF_DTYPES else x


def _autocast_on() -> list[str]:
    on = []
    for device in _AUTOCAST_DEVICES:
        try:
            if torch.is_autocast_enabled(device):
                on.append(device)
        except (RuntimeError, ValueError):  # a device type this build does not know
            pass
    return on


def full_precision(fn):
    """Decorator: run ``fn`` with ``torch.autocast`` disabled (on every device where it is on).

    Under autocast the matrix products of the geometry (Gram, powers, angles) would run in bfloat16 /
    float16 whatever their inputs; with this, inputs are upcast by :func:`check_features` and every
    product stays in float32. Outside autocast it only costs a flag lookup.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        on = _autocast_on()
        if not on:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device in on:
                stack.enter_context(torch.autocast(device, enabled=False))
            return fn(*args, **kwargs)

    return wrapper


def check_features(x: Tensor, name: str = "x") -> Tensor:
    """Check a batch of representations of shape (B, ...) and return it flattened to (B, d).

    float16 / bfloat16 inputs are returned in float32 (:func:`upcast_half`): the geometry is computed in
    float32 for them.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: fewer than 2 samples, no feature dimension, zero-width features, or NaN/Inf values.
    """
    return check_features_min(x, name)[0]


def check_features_min(x: Tensor, name: str = "x") -> tuple[Tensor, float]:
    """:func:`check_features` that also returns the minimum of ``x``.

    The finiteness test is one ``aminmax`` reading pass (NaN propagates to both, +-Inf shows in max/min)
    instead of ``isfinite(x).all()``, which fills (B, d) temporaries; the minimum also answers the sign test
    of the cosine kernel. The NaN/Inf counts are computed only for the error message.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (B, ...) with at least one feature dimension, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} has batch size {x.shape[0]}: a latent geometry graph needs at least 2 samples")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 0:
        raise ValueError(f"{name} has zero-width features (shape {tuple(x.shape)}): a sample needs at least one value")
    lo, hi = (v.item() for v in torch.aminmax(flat.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf): cannot build a graph")
    return upcast_half(flat), lo


def check_k(k: int | None, num_nodes: int) -> None:
    """``k`` must be None (full graph) or an integer with 1 <= k < num_nodes."""
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int or None, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got k={k}")
    if k >= num_nodes:
        raise ValueError(
            f"k={k} must be smaller than the batch size {num_nodes} (a vertex has only {num_nodes - 1} "
            "other vertices); use k=None for the full graph"
        )


def check_labels(labels: Tensor, num_nodes: int, name: str = "labels") -> Tensor:
    """Labels must be an integer tensor of shape (num_nodes,) with non-negative class indices."""
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.numel() != num_nodes:
        raise ValueError(f"{name} has shape {tuple(labels.shape)} but the graph has {num_nodes} vertices; expected ({num_nodes},)")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, got min {int(labels.min())}")
    return labels.long()


def check_choice(value, name: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(map(repr, choices))}")
