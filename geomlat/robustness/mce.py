"""Corruption errors and mean corruption error (mCE), Hendrycks & Dietterich (2019).

With ``E^f_{s,c}`` the error of model f at severity s of corruption c and ``E^f_clean`` its clean error:

- ``CE_c = sum_s E^f_{s,c} / sum_s E^base_{s,c}``, ``mCE = mean_c CE_c``;
- relative: ``rCE_c = sum_s (E^f_{s,c} - E^f_clean) / sum_s (E^base_{s,c} - E^base_clean)``,
  ``relative mCE = mean_c rCE_c``.

Tables are plain dicts ``{corruption name: [E_1, ..., E_5]}`` (any number of severities, the same for the
model and the baseline). Errors may be fractions or percentages (the ratios are unit-free, as long as the
model, the baseline and the clean errors use the same unit). CE, mCE and their relative versions are
returned in percent (x100), as in the papers (the baseline itself scores 100).

A baseline that makes no error on a corruption (or, for the relative version, whose summed error does not
exceed its clean error) gives a zero denominator: :func:`corruption_errors` raises a ``ValueError`` naming the
corruption instead of returning inf/NaN. A negative relative denominator (baseline better on corrupted than on
clean images) is also rejected: the ratio would flip sign and mean nothing.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..registry import UnknownNameError
from .corruptions import CORRUPTION_NAMES, CORRUPTIONS, SEVERITIES, corrupt, to_uint8
from .._params import check_int, check_number

ErrorTable = Mapping[str, Sequence[float]]


def _check_error(value: float, what: str) -> float:
    check_number(value, what, finite=False, error=TypeError)
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite error >= 0, got {value}")
    return value


def _check_table(table: ErrorTable, name: str) -> dict[str, list[float]]:
    if not isinstance(table, Mapping) or not table:
        raise TypeError(f"{name} must be a non-empty dict corruption -> list of errors per severity")
    out = {}
    for corruption, errors in table.items():
        if isinstance(errors, (str, bytes)) or not isinstance(errors, Iterable):
            raise TypeError(f"{name}[{corruption!r}] must be a list of errors per severity")
        values = [_check_error(e, f"{name}[{corruption!r}][{i}]") for i, e in enumerate(errors)]
        if not values:
            raise ValueError(f"{name}[{corruption!r}] is empty")
        out[corruption] = values
    return out


def corruption_errors(
    errors: ErrorTable,
    baseline_errors: ErrorTable,
    clean_error: float | None = None,
    baseline_clean_error: float | None = None,
    relative: bool = False,
) -> dict[str, float]:
    """Corruption error ``CE_c`` (or relative ``rCE_c``) of every corruption of ``errors``, in percent.

    Args:
        errors: model's table {corruption: [E_1..E_S]}.
        baseline_errors: baseline's table; must contain every corruption of ``errors`` with as many severities.
        clean_error, baseline_clean_error: clean errors (same unit), required when ``relative``.
        relative: relative CE (errors minus the clean error).

    Returns:
        {corruption: 100 * CE_c} in the order of ``errors``.
    """
    model = _check_table(errors, "errors")
    base = _check_table(baseline_errors, "baseline_errors")
    missing = [c for c in model if c not in base]
    if missing:
        raise KeyError(f"baseline_errors lacks corruption(s) {missing}; it has {list(base)}")
    if relative:
        if clean_error is None or baseline_clean_error is None:
            raise ValueError("relative CE needs clean_error and baseline_clean_error")
        f_clean = _check_error(clean_error, "clean_error")
        b_clean = _check_error(baseline_clean_error, "baseline_clean_error")
    out = {}
    for c, e in model.items():
        b = base[c]
        if len(e) != len(b):
            raise ValueError(f"corruption {c!r}: {len(e)} severities for the model but {len(b)} for the baseline")
        if relative:
            num = sum(v - f_clean for v in e)
            den = sum(v - b_clean for v in b)
            if den <= 0:
                raise ValueError(
                    f"relative CE undefined for {c!r}: the baseline's summed error increase over its clean error "
                    f"is {den:.6g} (<= 0), i.e. the corruption does not hurt the baseline"
                )
        else:
            num, den = sum(e), sum(b)
            if den <= 0:
                raise ValueError(f"CE undefined for {c!r}: the baseline makes no error at any severity")
        out[c] = 100.0 * num / den
    return out


def mce(
    errors: ErrorTable,
    baseline_errors: ErrorTable,
    clean_error: float | None = None,
    baseline_clean_error: float | None = None,
    relative: bool = False,
) -> float:
    """Mean corruption error (percent): the mean over corruptions of :func:`corruption_errors`."""
    ces = corruption_errors(errors, baseline_errors, clean_error, baseline_clean_error, relative)
    return float(np.mean(list(ces.values())))


def _predictor(model_or_predict_fn: nn.Module | Callable[[Tensor], Tensor], device) -> Callable[[Tensor], Tensor]:
    """Map a model (argmax of its outputs, eval mode, no grad) or a predict function to images -> labels."""
    if isinstance(model_or_predict_fn, nn.Module):
        model = model_or_predict_fn

        def predict(x: Tensor) -> Tensor:
            flags = [(m, m.training) for m in model.modules()]
            model.eval()
            try:
                with torch.no_grad():
                    return model(x if device is None else x.to(device)).argmax(dim=1)
            finally:
                for m, flag in flags:
                    m.training = flag

        return predict
    if not callable(model_or_predict_fn):
        raise TypeError(f"expected an nn.Module or a callable images -> predictions, got {type(model_or_predict_fn).__name__}")

    def predict_fn(x: Tensor) -> Tensor:
        out = torch.as_tensor(model_or_predict_fn(x if device is None else x.to(device)))
        return out.argmax(dim=1) if out.dim() == 2 else out

    return predict_fn


def _check_data(images: Tensor, labels: Tensor, batch_size: int) -> None:
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.dim() != 4:
        raise TypeError("images must be a floating-point tensor of shape (N, C, H, W)")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be a (N,) tensor with N = {images.shape[0]}")
    check_int(batch_size, "batch_size", low=1)


def error_rate(
    model_or_predict_fn: nn.Module | Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Fraction of misclassified images (in [0, 1])."""
    _check_data(images, labels, batch_size)
    predict = _predictor(model_or_predict_fn, device)
    wrong = 0
    for start in range(0, images.shape[0], batch_size):
        pred = predict(images[start:start + batch_size]).cpu()
        wrong += int((pred != labels[start:start + batch_size].cpu()).sum())
    return wrong / images.shape[0]


def evaluate_corruptions(
    model_or_predict_fn: nn.Module | Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    scale: float | None = None,
    uint8: bool = False,
) -> dict[str, list[float]]:
    """Error (fraction in [0, 1]) of a classifier on every corruption and severity of a test set.

    Args:
        model_or_predict_fn: an ``nn.Module`` (predictions = argmax of its outputs, computed in eval mode
            under no_grad; its mode is restored) or a callable images (B, C, H, W) -> labels (B,) or scores
            (B, K) (e.g. an embedding model followed by a ``geomlat.classifiers`` classifier).
        images: (N, C, H, W) clean images in [0, 1]; labels: (N,) class indices.
        names: corruptions to run (default: all 15, :data:`CORRUPTION_NAMES`).
        severities: severities to run (default 1..5).
        seed: each (corruption, severity) draws from ``default_rng([seed, index of the corruption, severity])``,
            so results do not depend on which other corruptions run; batches consume that stream in order
            (results depend on ``batch_size`` for random corruptions).
        batch_size: images corrupted and classified at a time.
        scale: pixel scale passed to the corruptions (default min(H, W) / 32).
        uint8: classify the corrupted images as CIFAR-10-C stores them, 8-bit (:func:`.corruptions.to_uint8`:
            truncated, or rounded where the reference's output is already 8-bit; what the ``robust`` and
            ``embed`` studies evaluate), instead of the floating-point outputs.

    Returns:
        {name: [error at each severity]}, an error table for :func:`mce`.
    """
    _check_data(images, labels, batch_size)
    names = list(CORRUPTION_NAMES if names is None else names)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise UnknownNameError(f"unknown corruption(s) {unknown}; registered: {sorted(CORRUPTIONS)}")
    for s in severities:
        check_int(s, "each of severities", low=min(SEVERITIES), high=max(SEVERITIES))
    predict = _predictor(model_or_predict_fn, device)
    table: dict[str, list[float]] = {}
    for name in names:
        table[name] = []
        for severity in severities:
            rng = np.random.default_rng([seed, CORRUPTION_NAMES.index(name), severity])
            wrong = 0
            for start in range(0, images.shape[0], batch_size):
                clean = images[start:start + batch_size]
                if uint8:
                    out = to_uint8(corrupt(clean.double(), name, severity, rng, scale=scale), name)
                    batch = out.to(clean.dtype) / 255.0
                else:
                    batch = corrupt(clean, name, severity, rng, scale=scale)
                pred = predict(batch).cpu()
                wrong += int((pred != labels[start:start + batch_size].cpu()).sum())
            table[name].append(wrong / images.shape[0])
    return table
