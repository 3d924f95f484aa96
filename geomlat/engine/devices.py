"""The training device: :func:`resolve_device` (``"auto"``, a clear error for CUDA without CUDA), the device
of a module's weights and this rank's device under a process group."""
from __future__ import annotations

import torch
from torch import nn

from ..distributed import is_distributed
from .config import TrainConfig

__all__ = ["resolve_device", "model_device", "training_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; a cuda device without CUDA raises a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available; use device='cpu' or 'auto'")
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of the first parameter or buffer of ``model`` (cpu for a module without any)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def training_device(config: TrainConfig) -> torch.device:
    """The device ``config.device`` names; under a process group ``"cuda"`` is this rank's GPU."""
    device = resolve_device(config.device)
    if is_distributed() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (set by init_from_env)
    return device

