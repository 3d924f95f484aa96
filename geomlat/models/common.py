"""Pieces shared by every model: argument checks, ReLU discovery, the pooled-feature head, parameter count."""
from __future__ import annotations

from torch import nn
from .._params import check_int, check_number



def check_positive_int(value, name: str) -> int:
    """``value`` must be an int >= 1 (bools rejected)."""
    check_int(value, name, error=TypeError)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def output_size(num_classes: int, out_dim: int | None) -> int:
    """Size of the last layer: ``num_classes`` for classification, ``out_dim`` for an embedding (e.g. 2-D)."""
    check_positive_int(num_classes, "num_classes")
    if out_dim is None:
        return num_classes
    return check_positive_int(out_dim, "out_dim")


def scaled_width(base: int, width: float, name: str = "width") -> int:
    """Channels of a layer of base width ``base`` scaled by ``width`` (fractional allowed), rounded, >= 1."""
    check_number(width, name, finite=False, error=TypeError)
    if not width > 0:
        raise ValueError(f"{name} must be > 0, got {width}")
    return max(1, int(round(base * width)))


def pooled_features(dims: int) -> nn.Sequential:
    """Global average pooling then flatten: (B, C, *spatial) -> (B, C). Non-negative when its input is post-ReLU."""
    pool = {1: nn.AdaptiveAvgPool1d(1), 2: nn.AdaptiveAvgPool2d(1)}[dims]
    return nn.Sequential(pool, nn.Flatten(1))


def find_relu_names(model: nn.Module) -> list[str]:
    """Names of every ``nn.ReLU`` sub-module in forward order of registration; rejects in-place ReLUs.

    In-place ReLUs would overwrite a captured tensor, and a ReLU instance reused at two places would make
    its captured output ambiguous, so both are refused.
    """
    names, seen = [], set()
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, nn.ReLU):
            if module.inplace:
                raise ValueError(f"ReLU {name!r} is in-place; every ReLU must be non-inplace to be capturable")
            if id(module) in seen:
                raise ValueError(f"ReLU {name!r} is a reused instance; every ReLU must be its own module")
            seen.add(id(module))
            names.append(name)
    return names


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``, each shared tensor counted once."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_parameters expects an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
