"""Engine objectives built on the LGG losses (``forward(x, y) -> (output, {name: scalar loss})``, attribute
``.model``; see :mod:`geomlat.engine`).

- :class:`LabelVariationObjective`: label variation of the output LGG as the training objective (LGG paper
  Section 4.2, Appendix E; Bontonou et al. 2019), optionally beside cross-entropy. ``.model(x)`` is the
  embedding (any width, 2-D included).
- :class:`BottleneckCrossEntropy`: cross-entropy through a linear head on a low-dimensional embedding (the
  bottleneck the paper adds to train 2-D embeddings with cross-entropy, Appendix E). ``.model(x)`` is the
  embedding; the head is part of the objective (trained and checkpointed with it).
- :class:`SmoothnessObjective`: cross-entropy plus the label-variation smoothness regularizer over
  captured layers (LGG paper Section 4.3; Lassance, Gripon & Ortega, "Laplacian networks", 2021).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..capture import LatentCapture, OutputKey, select_logits
from .embedding import LabelVariationLoss
from .regularizers import SmoothnessRegularizer

__all__ = ["LabelVariationObjective", "BottleneckCrossEntropy", "SmoothnessObjective"]


def _check_model(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return model


def _check_weight(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class LabelVariationObjective(nn.Module):
    """Train ``model`` by minimizing the label variation of the LGG of its output (LGG paper 4.2).

    Args:
        model: network whose output (B, D) is the embedding (D free: 2 works).
        loss: the label-variation loss (default ``LabelVariationLoss()``: full RBF graph, bandwidth from the
            batch, so the loss is invariant to a rescaling of the output).
        ce_weight: weight of a cross-entropy term on the same output (then D must equal the number of
            classes); 0 (default) trains with label variation alone.

    Forward: ``x`` (B, ...), ``y`` (B,) -> ``(model(x) (B, D), {"label_variation": loss[, "task": w * CE]})``.
    """

    def __init__(self, model: nn.Module, loss: nn.Module | None = None, ce_weight: float = 0.0,
                 output_key: OutputKey = None):
        super().__init__()
        self.model = _check_model(model)
        self.output_key = output_key
        self.loss = LabelVariationLoss() if loss is None else loss
        self.ce_weight = _check_weight(ce_weight, "ce_weight")

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out = select_logits(self.model(x), self.output_key)
        losses = {"label_variation": self.loss(out, y)}
        if self.ce_weight > 0:
            if out.dim() != 2 or int(y.max()) >= out.shape[1]:
                raise ValueError(f"ce_weight > 0 needs class scores (B, C > max label); got output shape {tuple(out.shape)}")
            losses["task"] = self.ce_weight * F.cross_entropy(out, y)
        return out, losses


class BottleneckCrossEntropy(nn.Module):
    """Cross-entropy through a linear head on the (low-dimensional) output of ``model``.

    ``logits = head(model(x))`` with ``head = nn.Linear(embed_dim, num_classes)``. The engine evaluates
    ``.model``, i.e. the embedding; classify it with ``geomlat.classifiers`` or with :meth:`logits`.

    Args:
        model: embedding network (B, ...) -> (B, embed_dim).
        num_classes: number of classes C.
        embed_dim: width of the embedding (default ``model.output_dim``).

    Forward: ``x``, ``y`` -> ``(logits (B, C), {"task": CE})``.
    """

    def __init__(self, model: nn.Module, num_classes: int, embed_dim: int | None = None, output_key: OutputKey = None):
        super().__init__()
        self.model = _check_model(model)
        self.output_key = output_key
        dim = embed_dim if embed_dim is not None else getattr(model, "output_dim", None)
        for value, name in ((dim, "embed_dim"), (num_classes, "num_classes")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int (give embed_dim when the model has no output_dim), got {value!r}")
        self.head = nn.Linear(dim, num_classes)

    def logits(self, x: Tensor) -> Tensor:
        return self.head(select_logits(self.model(x), self.output_key))

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.logits(x)
        return logits, {"task": F.cross_entropy(logits, y)}


class SmoothnessObjective(nn.Module):
    """Cross-entropy plus the smoothness regularizer on captured layers (LGG paper 4.3, eq. 9).

    ``task_weight * CE(model(x), y) + regularizer([f_1(x), ..., f_L(x)], y)`` where f_l are the outputs of
    the named modules ``layers`` in forward order (authors: every ReLU of a PreActResNet18, i.e.
    ``model.relu_names``). The regularizer carries its own weight (``gamma ** power``).

    Args:
        model: classifier returning logits (B, C).
        layers: names of non-negative (post-ReLU) modules, >= 2 (default ``model.relu_names``).
        regularizer: default ``SmoothnessRegularizer()`` (m = 2, gamma = 0.01, full cosine graphs).
        task_weight: weight of the cross-entropy term.

    Forward: ``x``, ``y`` -> ``(logits, {"task": CE, "smoothness": L_reg})``.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, regularizer: nn.Module | None = None,
                 task_weight: float = 1.0, output_key: OutputKey = None):
        super().__init__()
        self.model = _check_model(model)
        self.output_key = output_key
        names = list(getattr(model, "relu_names", []) if layers is None else layers)
        if len(names) < 2:
            raise ValueError(f"the smoothness regularizer needs >= 2 layers, got {names} (give layers= or a model with relu_names)")
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KeyError(f"layers {missing} are not modules of {type(model).__name__}")
        self.layers = names
        self.regularizer = SmoothnessRegularizer() if regularizer is None else regularizer
        self.task_weight = _check_weight(task_weight, "task_weight")

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with LatentCapture(self.model, self.layers) as feats:
            logits = select_logits(self.model(x), self.output_key)
        reg = self.regularizer([feats[n] for n in self.layers], y)
        return logits, {"task": self.task_weight * F.cross_entropy(logits, y), "smoothness": reg}
