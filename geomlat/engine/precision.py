"""Mixed precision as one object (as Lightning Fabric's precision plugins): :class:`Precision` runs the forward
under ``torch.autocast``, the backward (scaled for ``"16-mixed"``), the optimizer step (skipped by the grad
scaler when a gradient overflowed) and holds the state a checkpoint keeps.

``TrainConfig.precision`` names (PyTorch Lightning's): ``"32"`` (float32 throughout), ``"bf16-mixed"`` (the
forward under autocast bfloat16) and ``"16-mixed"`` (autocast float16 with a ``torch.amp.GradScaler``).
Weights, gradients and the optimizer stay float32.
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping

import torch

from .config import PRECISION_NAMES

__all__ = ["Precision", "PRECISIONS", "autocast_dtype", "make_grad_scaler"]

#: ``TrainConfig.precision`` values -> autocast dtype (None: no autocast, float32 throughout).
PRECISIONS: dict[str, torch.dtype | None] = dict(zip(PRECISION_NAMES, (None, torch.bfloat16, torch.float16)))


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a :attr:`TrainConfig.precision` value: None for ``"32"``, else bf16 / fp16."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A ``torch.amp.GradScaler`` on ``device`` for ``"16-mixed"``, None for the other precisions."""
    return torch.amp.GradScaler(torch.device(device).type) if autocast_dtype(precision) == torch.float16 else None


def _clip(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the gradients of every parameter of ``optimizer`` to total 2-norm ``max_norm`` (no host read:
    non-finite norms are left to the GradScaler / the finite-loss check)."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, max_norm)


class Precision:
    """How a training step runs in one precision: ``autocast`` (forward), ``backward`` and ``step``.

    With a grad scaler (``"16-mixed"``, see :meth:`from_name`) the loss is scaled before backward, the
    gradients are unscaled before clipping, and a step whose gradients are not finite is skipped (the scale
    is then lowered; ``GradScaler.step`` reads that flag on the host: one synchronization per step, unlike
    ``"32"`` and ``"bf16-mixed"``, which never wait for the device here).

    Args:
        name: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"``.
        scaler: a ``torch.amp.GradScaler`` (required for ``"16-mixed"``; :func:`make_grad_scaler`).
    """

    def __init__(self, name: str, scaler: torch.amp.GradScaler | None = None):
        self.name, self.dtype = name, autocast_dtype(name)
        if self.dtype == torch.float16 and scaler is None:
            raise ValueError('precision "16-mixed" needs a torch.amp.GradScaler (make_grad_scaler)')
        self.scaler = scaler

    @classmethod
    def from_name(cls, name: str, device: str | torch.device = "cpu") -> "Precision":
        """The precision ``name`` on ``device`` (with a new grad scaler for ``"16-mixed"``)."""
        return cls(name, make_grad_scaler(name, device))

    @property
    def skips_steps(self) -> bool:
        """True when a step may be skipped (a grad scaler): the epochs then count ``skipped_steps``."""
        return self.scaler is not None

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """``torch.autocast`` on ``device_type`` in the mixed precisions; a disabled one for ``"32"``."""
        return torch.autocast(device_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, on the scaled loss with a grad scaler."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip_grad_norm: float | None = None) -> bool:
        """Clip the gradients to total 2-norm ``clip_grad_norm`` (if given; the true, unscaled gradients) and
        step ``optimizer``; returns True when the grad scaler skipped the step (always False without one)."""
        if self.scaler is None:
            if clip_grad_norm is not None:
                _clip(optimizer, clip_grad_norm)
            optimizer.step()
            return False
        if clip_grad_norm is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients; step() does not unscale twice
            _clip(optimizer, clip_grad_norm)
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)  # skipped when a gradient is inf/NaN; the scale is then lowered by update()
        self.scaler.update()
        return self.scaler.get_scale() < before

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: ``{"scaler": ...}`` with a grad scaler, else nothing."""
        return {} if self.scaler is None else {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (from a checkpoint holding it among other entries)."""
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])

    def __repr__(self) -> str:
        return f"Precision({self.name!r})"
