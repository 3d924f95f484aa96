"""Loss terms in float32 inside mixed-precision (``torch.autocast``) regions.

Under autocast the network's outputs and captured features are float16/bfloat16, and autocast would also
run the matrix products of a loss in half precision. The objectives compute their loss terms inside
:func:`full_precision` on :func:`as_float32` copies of those tensors: the geometry (B x B similarities,
degrees, Laplacian powers, softmax of soft targets) in float32, gradients flowing back to the half
activations through the cast.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor

HALF_DTYPES = (torch.float16, torch.bfloat16)


def as_float32(x):
    """``x.float()`` for a float16/bfloat16 tensor (differentiable cast); anything else unchanged.
    Lists and tuples are converted element by element."""
    if isinstance(x, (list, tuple)):
        return type(x)(as_float32(v) for v in x)
    return x.float() if isinstance(x, Tensor) and x.dtype in HALF_DTYPES else x


@contextlib.contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """Autocast disabled for ``device``'s type inside the block (a no-op outside autocast)."""
    device_type = torch.device(device).type
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield
