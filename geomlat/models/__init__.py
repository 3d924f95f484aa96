"""Networks with named stages for latent-geometry analysis.

Every model exposes ``stage_names`` (modules ending each stage, post-ReLU outputs), ``feature_name``
(pooled penultimate features (B, F), non-negative), ``relu_names`` (every ReLU, each its own non-inplace
module) and ``output_dim``; all names are valid for :class:`geomlat.LatentCapture`.
``out_dim=None`` gives ``num_classes`` outputs; ``out_dim=2`` a 2-D embedding (label-variation objective).

Example:
    >>> model = build_model("wrn", width=0.5)
    >>> count_parameters(model)
    94042
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .common import count_parameters
from .resnet import PreActResNet18, ResNet18
from .small import MLP, Conv1dNet, SmallCNN
from .wideresnet import WideResNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "wrn": WideResNet,
    "resnet18": ResNet18,
    "preact_resnet18": PreActResNet18,
    "small_cnn": SmallCNN,
    "conv1d": Conv1dNet,
    "mlp": MLP,
}


def register_model(name: str, constructor: Callable[..., nn.Module]) -> None:
    """Add a model constructor to :data:`MODELS` (it must set the attributes listed in this module's doc)."""
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = constructor


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate the registered model ``name`` with keyword arguments (e.g. ``width``, ``num_classes``, ``out_dim``).

    Raises:
        KeyError: unknown name (the message lists the registered names).
        TypeError: an argument the model does not take (the message names the model).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    constructor = MODELS[name]
    try:
        return constructor(**kwargs)
    except TypeError as err:
        raise TypeError(f"build_model({name!r}): {err}") from err


__all__ = [
    "MLP",
    "MODELS",
    "Conv1dNet",
    "PreActResNet18",
    "ResNet18",
    "SmallCNN",
    "WideResNet",
    "build_model",
    "count_parameters",
    "register_model",
]
