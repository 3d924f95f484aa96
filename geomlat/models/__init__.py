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

from ..registry import Registry
from .common import count_parameters
from .resnet import PreActResNet18, ResNet18
from .small import MLP, Conv1dNet, SmallCNN
from .wideresnet import WideResNet

#: name -> model constructor (:func:`register_model` adds to it).
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
for _name, _constructor in [("wrn", WideResNet), ("resnet18", ResNet18), ("preact_resnet18", PreActResNet18),
                            ("small_cnn", SmallCNN), ("conv1d", Conv1dNet), ("mlp", MLP)]:
    MODELS.register(_name, _constructor)
del _name, _constructor


def register_model(name: str, constructor: Callable[..., nn.Module] | None = None):
    """Add a model constructor to :data:`MODELS` (it must set the attributes listed in this module's doc):
    ``@register_model("name")`` on a class or function, or ``register_model("name", constructor)``. Returns
    the constructor; ``ValueError`` for a name taken."""
    return MODELS.register(name, constructor)


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate the registered model ``name`` with keyword arguments (e.g. ``width``, ``num_classes``, ``out_dim``).

    Raises:
        UnknownNameError: unknown name (a ``KeyError``; the message lists the registered names).
        TypeError: an argument the model does not take (the message names the model).
    """
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
