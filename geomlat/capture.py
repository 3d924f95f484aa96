"""Capture intermediate representations of any ``nn.Module`` by name with forward hooks."""
from __future__ import annotations

from typing import Iterable

from torch import Tensor, nn


class LatentCapture:
    """Context manager recording the outputs of named sub-modules during forward passes.

    Args:
        model: any module.
        layers: names from ``model.named_modules()`` (e.g. ``"layer2.1.relu"``).
        detach: store detached outputs (analysis) instead of keeping the autograd graph (losses).

    Inside the block, ``capture.outputs`` (also what ``__enter__`` returns) maps each name to the
    output of its last forward call, a (B, ...) tensor, in the order of ``layers``. Hooks are removed
    on exit, also when the block raises. Works under ``torch.no_grad()``. A module whose output is a
    tuple or list contributes its first element. Beware in-place operations applied after a captured
    module (``ReLU(inplace=True)``): they change the stored tensor; capture the in-place module instead.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> with LatentCapture(model, ["1", "2"]) as feats:
        ...     logits = model(torch.rand(5, 4))
        >>> list(feats), tuple(feats["1"].shape), bool((feats["1"] >= 0).all())
        (['1', '2'], (5, 8), True)
        >>> torch.equal(feats["2"], logits)
        True
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], detach: bool = False):
        self.model = model
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("LatentCapture needs at least one layer name")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"duplicate layer names in {self.layers}")
        self.detach = detach
        self.outputs: dict[str, Tensor] = {}
        self._handles = []

    def __enter__(self) -> dict[str, Tensor]:
        modules = dict(self.model.named_modules())
        unknown = [name for name in self.layers if name not in modules]
        if unknown:
            valid = [name for name in modules if name]
            raise KeyError(f"unknown layer name(s) {unknown} in {type(self.model).__name__}; valid names: {valid}")
        self.outputs.clear()
        for name in self.layers:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self.outputs

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            self.outputs[name] = output.detach() if self.detach else output

        return hook

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False

    def ordered(self) -> list[Tensor]:
        """Captured tensors in the order of ``layers``; fails if a layer was not reached by the forward pass."""
        missing = [name for name in self.layers if name not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output during the forward pass")
        return [self.outputs[name] for name in self.layers]
